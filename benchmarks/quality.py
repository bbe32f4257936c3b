"""Quality at a fixed budget on Fashion-MNIST: train each recipe for E epochs over several seeds,
score the last checkpoint with evaluate.py, and print a markdown table (median and range).

    python benchmarks/quality.py --recipes default seed_fashion_dcgan --seeds 0 1 2 --epochs 1
    python benchmarks/quality.py --epochs 5 --jobs 12 --extra trainer=gpu   # 12 runs at once on one GPU

Every run appends one JSON line to benchmarks/results/quality.jsonl (the raw record); the table
is what goes into benchmarks/RESULTS.md. Scores use the project's own Fashion-MNIST feature
network, not Inception.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {
    "default": [],
    "seed_fashion_dcgan": ["experiment=seed_fashion_dcgan"],
    "seed_fashion_mlp": ["experiment=seed_fashion_mlp"],
    "radford_dcgan": ["optimizer=adam", "dataset.batch_size=128"],  # the paper: Adam 2e-4, beta1 0.5, batch 128
    "vae": ["model=vae", "callbacks.codings_map=null"],  # seed 004's VAE, sampled from its prior
}
_APPEND = threading.Lock()
COLUMNS = ("fid", "kid", "precision", "recall", "coverage", "classes_covered", "class_kl")


def run_one(recipe: str, seed: int, epochs: int, num_samples: int, extra: list[str],
            recipe_overrides: list[str] | None = None) -> dict:
    """Train ``recipe`` (a RECIPES name, or any name with ``recipe_overrides``), score it, record it."""
    run_dir = RESULTS / "runs" / f"{recipe}_e{epochs}_s{seed}"
    recipe_overrides = RECIPES[recipe] if recipe_overrides is None else recipe_overrides
    overrides = [*recipe_overrides, *extra, f"seed={seed}", f"trainer.max_epochs={epochs}",
                 "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                 "callbacks.samples.every_n_steps=1000000", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.time()
    subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True)
    train_seconds = time.time() - start
    out = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                          f"num_samples={num_samples}", f"num_real={num_samples}", "floor=false"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    record = {"recipe": recipe, "seed": seed, "epochs": epochs, "train_seconds": round(train_seconds, 1),
              "overrides": overrides[:-1], "metrics": scores["metrics"], "protocol": scores["protocol"],
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": date.today().isoformat()}
    append_record("quality.jsonl", record)
    return record


def append_record(name: str, record: dict) -> None:
    """Append one JSON line to results/NAME (safe from several threads at once)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with _APPEND, open(RESULTS / name, "a") as f:
        f.write(json.dumps(record) + "\n")


def _stderr_tail(error: subprocess.CalledProcessError, chars: int = 3000) -> str:
    err = error.stderr or ""
    return (err.decode(errors="replace") if isinstance(err, bytes) else err)[-chars:]


def run_all(fn, calls: list[tuple], jobs: int = 1) -> list[dict]:
    """``[fn(*args) for args in calls]``; with ``jobs`` > 1, that many at once (each run is its own
    train.py process). In parallel a failed run is reported on stderr and left out, and the others go on."""
    if jobs <= 1:
        try:
            return [fn(*args) for args in calls]
        except subprocess.CalledProcessError as e:  # its traceback alone would hide the script's error
            raise SystemExit(f"FAILED {' '.join(map(str, e.cmd[1:]))}:\n{_stderr_tail(e)}") from e

    def guarded(args: tuple) -> dict | None:
        try:
            record = fn(*args)
        except subprocess.CalledProcessError as e:
            print(f"FAILED {args}: {_stderr_tail(e)}", file=sys.stderr, flush=True)
            return None
        print(f"done {args}: {record.get('train_seconds')} s", file=sys.stderr, flush=True)
        return record

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records = [r for r in pool.map(guarded, calls) if r is not None]
    if len(records) < len(calls):
        print(f"{len(calls) - len(records)} of {len(calls)} runs failed", file=sys.stderr, flush=True)
    return records


def table(records: list[dict]) -> str:
    """Median [min, max] per recipe and budget."""
    lines = ["| recipe | epochs | seeds | train s | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["recipe"], r["epochs"]), []).append(r)
    for (recipe, epochs), rs in groups.items():
        cells = []
        for col in COLUMNS:
            values = [r["metrics"][col] for r in rs]
            cells.append(f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]")
        seconds = statistics.median(r["train_seconds"] for r in rs)
        lines.append(f"| {recipe} | {epochs} | {len(rs)} | {seconds:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[1])
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    args = parser.parse_args()
    calls = [(recipe, seed, epochs, args.num_samples, args.extra)
             for epochs in args.epochs for recipe in args.recipes for seed in args.seeds]
    records = run_all(run_one, calls, args.jobs)
    print(table(records))


if __name__ == "__main__":
    main()
