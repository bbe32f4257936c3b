"""Mode coverage on the 2-D ring and grid over many seeds: modes captured, high-quality share and
reverse KL (2,500 samples, 3 std), per recipe and loss.

    python benchmarks/toy2d.py --data ring grid --seeds 0 1 2 3 4 5 6 7 8 9 --losses non_saturating
    python benchmarks/toy2d.py --recipe pacgan        # experiment=toy_ring_pacgan / toy_grid_pacgan, 10 seeds

Appends one JSON line per run to benchmarks/results/toy2d.jsonl and prints a markdown table
(median [min, max] over seeds, and how many seeds capture every mode with >= 95 % high quality).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from quality import append_record, run_all

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NUM_MODES = {"ring": 8, "grid": 25}
# A loss file selects the loss only; the Wasserstein losses are run with their papers' optimizer and
# 5 critic steps, as experiment=wgan / wgan_gp pair them (the toy recipe is already the experiment).
PAPER_SETTINGS = {"wgan": ["optimizer=wgan", "model.n_critic=5"], "wgan_gp": ["optimizer=wgan_gp", "model.n_critic=5"]}


def run_one(data: str, loss: str, seed: int, extra: list[str], tag: str = "", recipe: str = "") -> dict:
    run_dir = RESULTS / "runs" / f"toy_{data}{recipe}_{loss}{tag}_s{seed}"
    overrides = [f"experiment=toy_{data}{recipe}", f"loss={loss}", *PAPER_SETTINGS.get(loss, []), *extra, f"seed={seed}", "callbacks.progress_bar=null",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.time()
    subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True)
    seconds = time.time() - start
    out = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                          f"seed={seed}"], cwd=ROOT, check=True, capture_output=True, text=True)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])["metrics"]
    record = {"data": data, "loss": loss, "tag": recipe + tag, "seed": seed, "train_seconds": round(seconds, 1), "overrides": overrides[:-1],
              "metrics": metrics, "date": date.today().isoformat()}
    append_record("toy2d.jsonl", record)
    return record


def table(records: list[dict]) -> str:
    lines = ["| data | loss | seeds | modes captured | high-quality % | reverse KL | seeds with all modes and >= 95 % |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["data"], r["loss"] + r.get("tag", "")), []).append(r)
    for (data, loss), rs in groups.items():
        def cell(key: str, scale: float = 1.0) -> str:
            # reverse KL is undefined (None) for a run with no high-quality sample at all
            values = [r["metrics"][key] * scale for r in rs if r["metrics"][key] is not None]
            undefined = len(rs) - len(values)
            note = f" ({undefined} undefined)" if undefined else ""
            if not values:
                return "undefined"
            return f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]{note}"

        ok = sum(r["metrics"]["modes_captured"] == NUM_MODES[data] and r["metrics"]["high_quality"] >= 0.95 for r in rs)
        lines.append(f"| {data} | {loss} | {len(rs)} | {cell('modes_captured')} | {cell('high_quality', 100)} | "
                     f"{cell('reverse_kl')} | {ok}/{len(rs)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ring", "grid"], choices=list(NUM_MODES))
    parser.add_argument("--losses", nargs="+", default=["non_saturating"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    parser.add_argument("--tag", default="", help="suffix for the run folders and the table's loss column, e.g. _pack4")
    parser.add_argument("--recipe", choices=["plain", "pacgan"], default="plain",
                        help="plain: experiment=toy_<data>; pacgan: experiment=toy_<data>_pacgan (PacGAN, pack 4)")
    args = parser.parse_args()
    recipe = "" if args.recipe == "plain" else f"_{args.recipe}"
    calls = [(d, loss, s, args.extra, args.tag, recipe) for d in args.data for loss in args.losses for s in args.seeds]
    records = run_all(run_one, calls, args.jobs)
    print(table(records))


if __name__ == "__main__":
    main()
