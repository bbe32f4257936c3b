"""ProGAN and StyleGAN on Fashion-MNIST padded to 32x32, grown 4 -> 32 on the recipes' schedules, and
StyleGAN2 at 32x32 throughout for the same number of images (220k).

    python benchmarks/progressive.py --recipes progan stylegan stylegan2 --seeds 0
    python benchmarks/progressive.py --recipes stylegan2 --extra model.loss.r1_weight=1 --tag _r1w1

Trains ``experiment=<recipe>_fashion32`` (the schedule in images says when to stop; the wall time
is the CPU budget), then scores the last checkpoint's EMA generator with evaluate.py on the central
28x28 pixels (``crop=28``) against the unpadded Fashion-MNIST test images: the same protocol and
feature network (the project's own classifier, not Inception) as benchmarks/quality.py. Appends one
JSON line per run to benchmarks/results/progressive.jsonl and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from quality import table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {"progan": "experiment=progan_fashion32", "stylegan": "experiment=stylegan_fashion32",
           "stylegan2": "experiment=stylegan2_fashion32"}  # StyleGAN2 does not grow: 32x32 throughout


def run_one(recipe: str, seed: int, num_samples: int, extra: list[str], threads: int | None, tag: str = "") -> dict:
    run_dir = RESULTS / "runs" / f"{recipe}{tag}_s{seed}"
    overrides = [RECIPES[recipe], *extra, f"seed={seed}", "callbacks.progress_bar=null",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", "overwrite=true"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.time()
    subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=env, check=True, capture_output=True)
    train_seconds = time.time() - start
    out = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={run_dir / 'checkpoints' / 'last.ckpt'}",
                          "dataset=fashion_mnist", "crop=28", f"num_samples={num_samples}", f"num_real={num_samples}",
                          "floor=false"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    record = {"recipe": recipe + tag, "seed": seed, "epochs": "schedule", "train_seconds": round(train_seconds, 1),
              "threads": threads, "overrides": overrides[:-1], "metrics": scores["metrics"],
              "protocol": scores["protocol"], "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
              "date": date.today().isoformat()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "progressive.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each run")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--tag", default="", help="suffix for the run folders and the recipe column, e.g. _r1w1")
    args = parser.parse_args()
    records = [run_one(r, s, args.num_samples, args.extra, args.threads, args.tag)
               for r in args.recipes for s in args.seeds]
    print(table(records))


if __name__ == "__main__":
    main()
