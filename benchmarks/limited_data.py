"""Training on little data: the default DCGAN recipe on a class-balanced Fashion-MNIST subset
(dataset.subset=N) for a fixed number of generator steps, without augmentation, with DiffAugment and
with ADA, over several seeds, scored with evaluate.py (the project's own feature network, not Inception).

    python benchmarks/limited_data.py --subsets 1000 5000 --augments none diffaugment ada --seeds 0 1 2
    python benchmarks/limited_data.py --steps 20000 --jobs 6 --extra trainer=gpu   # 6 runs at once on one GPU

Appends one JSON line per run to benchmarks/results/limited_data.jsonl (with ADA's final p) and prints
a markdown table (median [min, max] over seeds).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from quality import COLUMNS, append_record, run_all

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
AUGMENTS = ("none", "diffaugment", "ada")


def final_p(checkpoint: Path) -> float | None:
    """ADA's probability at the end of the run (None without ADA, or with a fixed p: not saved then)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return float(state["loss.augment.p"]) if "loss.augment.p" in state else None


def run_one(subset: int, augment: str, seed: int, steps: int, num_samples: int, extra: list[str]) -> dict:
    """Train the default recipe on ``subset`` images with ``augment`` for ``steps`` G steps, score it, record it."""
    run_dir = RESULTS / "runs" / f"limited_n{subset}_{augment}_g{steps}_s{seed}"
    overrides = [f"dataset.subset={subset}", f"augment={augment}", *extra, f"seed={seed}",
                 f"max_generator_steps={steps}", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                 "callbacks.samples.every_n_steps=1000000", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.time()
    subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True)
    train_seconds = time.time() - start
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    out = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={checkpoint}", f"num_samples={num_samples}",
                          f"num_real={num_samples}", "floor=false"], cwd=ROOT, check=True, capture_output=True, text=True)
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    record = {"subset": subset, "augment": augment, "seed": seed, "generator_steps": steps,
              "train_seconds": round(train_seconds, 1), "final_augment_p": final_p(checkpoint),
              "overrides": overrides[:-1], "metrics": scores["metrics"], "protocol": scores["protocol"],
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": date.today().isoformat()}
    append_record("limited_data.jsonl", record)
    return record


def table(records: list[dict]) -> str:
    """Median [min, max] per subset size and augmentation."""
    lines = ["| images | augment | G steps | seeds | train s | final p | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    groups: dict[tuple[int, str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["subset"], r["augment"], r["generator_steps"]), []).append(r)
    for (subset, augment, steps), rs in sorted(groups.items(), key=lambda item: (item[0][0], AUGMENTS.index(item[0][1]))):
        cells = []
        for col in COLUMNS:
            values = [r["metrics"][col] for r in rs]
            cells.append(f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]")
        seconds = statistics.median(r["train_seconds"] for r in rs)
        ps = [r["final_augment_p"] for r in rs if r.get("final_augment_p") is not None]
        p_cell = f"{statistics.median(ps):.2f}" if ps else "-"
        lines.append(f"| {subset} | {augment} | {steps} | {len(rs)} | {seconds:.0f} | {p_cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", nargs="+", type=int, default=[1000, 5000], help="training images (dataset.subset)")
    parser.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10000, help="generator steps per run (max_generator_steps)")
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    args = parser.parse_args()
    calls = [(subset, augment, seed, args.steps, args.num_samples, args.extra)
             for subset in args.subsets for augment in args.augments for seed in args.seeds]
    records = run_all(run_one, calls, args.jobs)
    print(table(records))


if __name__ == "__main__":
    main()
