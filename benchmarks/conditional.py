"""Does a conditional GAN draw the class it is asked for? Train a conditional model on Fashion-MNIST,
sample N images per class, and report how often the shipped feature network (not Inception)
classifies each row of the class grid as the requested class.

    python benchmarks/conditional.py --model cgan_dcgan --seeds 0 1 2 --epochs 1
    python benchmarks/conditional.py --rescore <run>/checkpoints/last.ckpt --seeds 0 --z-thresholds 2 1.5 1 0.5

Appends one JSON line per run to benchmarks/results/conditional.jsonl and prints a markdown table
(per-class accuracy, its minimum over classes, and the mean) with the median over seeds.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from quality import append_record, run_all

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def truncated_normal(shape: tuple[int, ...], threshold: float | None, generator: torch.Generator) -> torch.Tensor:
    """Standard normal draws, those beyond +-``threshold`` redrawn until none is (BigGAN's truncation)."""
    z = torch.randn(shape, generator=generator)
    while threshold is not None and (outside := z.abs() > threshold).any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
    return z


def class_accuracy(checkpoint: Path, per_class: int, seed: int, z_threshold: float | None = None) -> list[float]:
    """For each class k: the share of ``per_class`` samples G(z, k) that the feature network calls k."""
    from gan_modules.checkpoints import load_generator
    from gan_modules.images import to_unit_range
    from gan_modules.metrics.evaluation import embed
    from gan_modules.metrics.features import load_feature_net
    from gan_modules.nets.conditional import is_conditional
    from gan_modules.sampling import sample_in_batches

    generator, _ = load_generator(checkpoint)
    net, _ = load_feature_net("fashion_mnist")
    if not is_conditional(generator):
        raise SystemExit(f"{checkpoint}: not a conditional generator (train one with model=cgan_dcgan)")
    num_classes = int(generator.num_classes)
    z = truncated_normal((per_class * num_classes, generator.z_dim), z_threshold, torch.Generator().manual_seed(seed))
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = to_unit_range(sample_in_batches(generator, z, labels), generator.output_range)
    images = (images * 255).round() / 255  # the uint8 quantisation generate.py's npz goes through
    _, probs = embed(net, images)
    hits = (probs.argmax(dim=1) == labels).float().view(num_classes, per_class)
    return hits.mean(dim=1).tolist()


def run_one(model: str, seed: int, epochs: int, per_class: int, extra: list[str] = ()) -> dict:
    # The extra overrides name the run folder too, so a variant never overwrites the plain model's run.
    # ('=' is not allowed in a Hydra override's value, so it becomes '-').
    variant = "".join("_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", o) for o in extra)
    run_dir = RESULTS / "runs" / f"{model}{variant}_e{epochs}_s{seed}"
    overrides = [f"model={model}", *extra, f"seed={seed}", f"trainer.max_epochs={epochs}", "callbacks.progress_bar=null",
                 "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.time()
    subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True)
    seconds = time.time() - start
    accuracy = class_accuracy(run_dir / "checkpoints" / "last.ckpt", per_class, seed)
    record = {"model": model, "extra": list(extra), "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1),
              "overrides": overrides[:-1], "per_class": per_class, "class_accuracy": accuracy,
              "feature_net": "fashion_mnist (own classifier, not Inception)", "date": date.today().isoformat()}
    append_record("conditional.jsonl", record)
    return record


def table(records: list[dict]) -> str:
    num_classes = len(records[0]["class_accuracy"])
    lines = ["| model | epochs | seeds | " + " | ".join(f"class {k}" for k in range(num_classes)) + " | min | mean |",
             "|---|---|---|" + "---|" * (num_classes + 2)]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        name = " ".join([r["model"], *r.get("extra", [])])
        groups.setdefault((name, r["epochs"]), []).append(r)
    for (model, epochs), rs in groups.items():
        per_class = [statistics.median(r["class_accuracy"][k] for r in rs) for k in range(num_classes)]
        worst = statistics.median(min(r["class_accuracy"]) for r in rs)
        mean = statistics.median(statistics.mean(r["class_accuracy"]) for r in rs)
        cells = " | ".join(f"{100 * a:.0f} %" for a in per_class)
        lines.append(f"| {model} | {epochs} | {len(rs)} | {cells} | {100 * worst:.0f} % | {100 * mean:.1f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["cgan_dcgan"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    parser.add_argument("--rescore", type=Path, help="score this checkpoint instead of training (prints only)")
    parser.add_argument("--z-thresholds", nargs="+", type=float, default=[],
                        help="with --rescore: also score z drawn from a normal truncated at each threshold")
    args = parser.parse_args()
    if args.z_thresholds and not args.rescore:
        parser.error("--z-thresholds scores an existing checkpoint: give it with --rescore <run>/checkpoints/last.ckpt")
    if any(t <= 0 for t in args.z_thresholds):
        parser.error(f"--z-thresholds must be positive (got {args.z_thresholds}): |z| <= 0 can never be drawn")
    if args.rescore:
        for threshold in [None, *args.z_thresholds]:
            accuracy = class_accuracy(args.rescore, args.per_class, args.seeds[0], threshold)
            print(f"|z| <= {'inf' if threshold is None else threshold}: " + " ".join(f"{100 * a:.0f}" for a in accuracy)
                  + f" | min {100 * min(accuracy):.0f} % | mean {100 * statistics.mean(accuracy):.1f} %")
        return
    calls = [(m, s, args.epochs, args.per_class, args.extra) for m in args.model for s in args.seeds]
    records = run_all(run_one, calls, args.jobs)
    print(table(records))


if __name__ == "__main__":
    main()
