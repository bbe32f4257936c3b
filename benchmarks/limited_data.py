"""Training on little data: the default DCGAN recipe on a class-balanced Fashion-MNIST subset
(dataset.subset=N) for a fixed number of generator steps, without augmentation, with DiffAugment and
with ADA, over several seeds, scored with evaluate.py (the project's own feature network, not Inception).

    python benchmarks/limited_data.py --subsets 1000 5000 all --augments none diffaugment ada --seeds 0 1 2
    python benchmarks/limited_data.py --steps 20000 --jobs 6 --extra trainer=gpu   # 6 runs at once on one GPU

``all`` is the whole training set (no subset), the reference at the same number of steps. Each run
also records ADA's p over training (from the run's metrics.csv) and two leak checks on 2,000 samples
against the test images: the class histogram (evaluate.py's class_kl) and the left-right asymmetry of
shoes (the signed horizontal centroid of the images the feature network calls sandal, sneaker or
ankle boot: Fashion-MNIST's shoes all point one way, so a leaking horizontal flip pulls it to 0).

``--curve K`` also scores up to K of the run's earlier checkpoints, evenly spaced, with the same
protocol, and records FID over training; keep such checkpoints with
``--extra callbacks.model_checkpoint.every_n_epochs=N`` (by default every epoch is kept):

    python benchmarks/limited_data.py --subsets 1000 --augments none ada --seeds 0 --steps 64000 --jobs 2 \
        --extra callbacks.model_checkpoint.every_n_epochs=64 --curve 4

Appends one JSON line per run to benchmarks/results/limited_data.jsonl and prints a markdown table
(median [min, max] over seeds).
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import torch

from quality import COLUMNS, append_record, run_all

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the leak checks load the generator in this process
RESULTS = ROOT / "benchmarks" / "results"
AUGMENTS = ("none", "diffaugment", "ada")


def final_p(checkpoint: Path) -> float | None:
    """ADA's probability at the end of the run (None without ADA, or with a fixed p: not saved then)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return float(state["loss.augment.p"]) if "loss.augment.p" in state else None


SHOE_CLASSES = (5, 7, 9)  # sandal, sneaker, ankle boot


def shoe_centroid(images: torch.Tensor, net) -> tuple[float, int]:
    """Mean signed horizontal centroid (pixels from the centre, + = right) of the images ``net``
    classifies as shoes, and how many there are."""
    with torch.no_grad():
        predicted = torch.cat([net(chunk).argmax(1) for chunk in images.split(500)])
    shoes = images[torch.isin(predicted, torch.tensor(SHOE_CLASSES))]
    if len(shoes) == 0:
        return float("nan"), 0
    mass = shoes.sum(dim=(1, 2))  # (N, W): ink per column
    columns = torch.arange(mass.shape[1], dtype=mass.dtype) - (mass.shape[1] - 1) / 2
    centroid = (mass * columns).sum(1) / mass.sum(1).clamp_min(1e-8)
    return float(centroid.mean()), len(shoes)


# --jobs runs score in threads of this process; Hydra's config composition is global state.
LEAK_CHECK_LOCK = threading.Lock()


def leak_checks(checkpoint: Path, n: int = 2000) -> dict:
    """The shoes' left-right centroid in samples and in the test images (same classifier)."""
    with LEAK_CHECK_LOCK:
        return _leak_checks(checkpoint, n)


def _leak_checks(checkpoint: Path, n: int) -> dict:
    from gan_modules.checkpoints import load_generator
    from gan_modules.images import to_unit_range
    from gan_modules.metrics.evaluation import dataset_config, take, unit_range_datamodule
    from gan_modules.metrics.features import load_feature_net
    from gan_modules.sampling import chunked_latents, sample_in_batches

    generator, _ = load_generator(checkpoint)
    fake = to_unit_range(sample_in_batches(generator, chunked_latents(n, generator.z_dim, 0)), generator.output_range)
    datamodule = unit_range_datamodule(dataset_config("fashion_mnist"))
    real, _ = take(datamodule.test_dataset, n, 0)
    net, _ = load_feature_net("fashion_mnist")
    (fake_c, fake_n), (real_c, real_n) = shoe_centroid(fake, net), shoe_centroid(real, net)
    return {"shoe_centroid_samples": fake_c, "shoes_in_samples": fake_n, "shoe_centroid_data": real_c,
            "shoes_in_data": real_n}


def p_over_training(run_dir: Path, points: int = 10) -> list[list[float]] | None:
    """ADA's p at about ``points`` evenly spaced logged steps: [[step, p], ...] (None without it)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    with open(path) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("augment_p")]
    if not rows:
        return None
    picks = sorted({round(i * (len(rows) - 1) / (points - 1)) for i in range(points)})
    return [[int(float(rows[i]["step"])), round(float(rows[i]["augment_p"]), 4)] for i in picks]


def generator_steps_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]["generator_steps"])


def score(checkpoint: Path, num_samples: int) -> dict:
    """evaluate.py's JSON for ``checkpoint`` (samples and real images: ``num_samples`` each)."""
    out = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={checkpoint}", f"num_samples={num_samples}",
                          f"num_real={num_samples}", "floor=false"], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fid_over_training(run_dir: Path, final_step: int, points: int, num_samples: int) -> list[list[float]]:
    """[[generator step, FID], ...] for up to ``points`` of the run's kept checkpoints before the last,
    evenly spaced."""
    kept = sorted((generator_steps_of(c), c) for c in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    kept = [(step, c) for step, c in kept if step < final_step]
    if points <= 0 or not kept:
        return []
    picks = sorted({round(i * (len(kept) - 1) / max(points - 1, 1)) for i in range(min(points, len(kept)))})
    return [[kept[i][0], round(score(kept[i][1], num_samples)["metrics"]["fid"], 2)] for i in picks]


def run_one(subset: int | None, augment: str, seed: int, steps: int, num_samples: int, extra: list[str],
            score_only: bool = False, curve: int = 0, tag: str = "") -> dict:
    """Train the default recipe on ``subset`` images (None: all) with ``augment`` for ``steps`` G steps,
    score it, record it. ``score_only``: score the run folder's finished checkpoint instead of training;
    ``curve``: also score up to that many earlier checkpoints."""
    run_dir = RESULTS / "runs" / f"limited_n{subset or 'all'}_{augment}{tag}_g{steps}_s{seed}"
    overrides = [*([f"dataset.subset={subset}"] if subset else []), f"augment={augment}", *extra, f"seed={seed}",
                 f"max_generator_steps={steps}", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                 "callbacks.samples.every_n_steps=1000000", f"hydra.run.dir={run_dir}", "overwrite=true"]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    train_seconds = None
    if score_only:
        if not checkpoint.is_file():
            raise SystemExit(f"--score-only: {checkpoint} does not exist; train the run first (leave out --score-only).")
    else:
        start = time.time()
        subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True)
        train_seconds = time.time() - start
    scored_step = generator_steps_of(checkpoint)
    if scored_step != steps:  # a last.ckpt of an earlier step would be scored under this run's name
        raise SystemExit(f"{checkpoint} is at generator step {scored_step}, not {steps}: not scoring it.")
    scores = score(checkpoint, num_samples)
    record = {"subset": subset, "augment": augment, "tag": tag, "seed": seed, "generator_steps": steps,
              "scored_generator_steps": scored_step,
              "train_seconds": None if train_seconds is None else round(train_seconds, 1), "final_augment_p": final_p(checkpoint),
              "augment_p_over_training": p_over_training(run_dir), "leak": leak_checks(checkpoint),
              "fid_over_training": fid_over_training(run_dir, steps, curve, num_samples),
              "overrides": overrides[:-1], "metrics": scores["metrics"], "protocol": scores["protocol"],
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": date.today().isoformat()}
    append_record("limited_data.jsonl", record)
    return record


def table(records: list[dict]) -> str:
    """Median [min, max] per subset size and augmentation."""
    lines = ["| images | augment | G steps | seeds | train s | final p | shoe centroid (data) | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    groups: dict[tuple[int, str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["subset"], r["augment"], r.get("tag", ""), r["generator_steps"]), []).append(r)
    for (subset, augment, tag, steps), rs in sorted(
            groups.items(), key=lambda item: (item[0][0] or 10**9, AUGMENTS.index(item[0][1]), item[0][2], item[0][3])):
        cells = []
        for col in COLUMNS:
            values = [r["metrics"][col] for r in rs]
            cells.append(f"{statistics.median(values):.3g} [{min(values):.3g}, {max(values):.3g}]")
        timed = [r["train_seconds"] for r in rs if r["train_seconds"] is not None]
        seconds = f"{statistics.median(timed):.0f}" if timed else "-"
        ps = [r["final_augment_p"] for r in rs if r.get("final_augment_p") is not None]
        p_cell = f"{statistics.median(ps):.2f}" if ps else "-"
        leaks = [r["leak"]["shoe_centroid_samples"] for r in rs if "leak" in r]
        data = next((r["leak"]["shoe_centroid_data"] for r in rs if "leak" in r), float("nan"))
        leak_cell = f"{statistics.median(leaks):+.2f} ({data:+.2f})" if leaks else "-"
        lines.append(f"| {subset or 'all'} | {augment}{tag} | {steps} | {len(rs)} | {seconds} | {p_cell} | {leak_cell} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsets", nargs="+", default=["1000", "5000", "all"],
                        help="training images (dataset.subset); all: the whole training set")
    parser.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10000, help="generator steps per run (max_generator_steps)")
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    parser.add_argument("--score-only", action="store_true",
                        help="score the finished runs already in benchmarks/results/runs/ instead of training them")
    parser.add_argument("--tag", default="", help="suffix for the run folders and the table's augment column, "
                        "e.g. _dnorm_none with --extra model.discriminator.norm=none")
    parser.add_argument("--curve", type=int, default=0, metavar="K",
                        help="also score up to K of each run's earlier checkpoints (FID over training)")
    args = parser.parse_args()
    if args.curve < 0:
        parser.error(f"--curve must be 0 or more, got {args.curve}")
    if min(args.steps, args.num_samples, args.jobs) < 1:
        parser.error("--steps, --num-samples and --jobs must be positive")
    if not re.fullmatch(r"[A-Za-z0-9_.-]*", args.tag):
        parser.error(f"--tag {args.tag!r}: use letters, digits, '_', '.' and '-' only (it names run folders)")
    subsets = [None if s == "all" else int(s) for s in args.subsets]
    calls = [(subset, augment, seed, args.steps, args.num_samples, args.extra, args.score_only, args.curve, args.tag)
             for subset in subsets for augment in args.augments for seed in args.seeds
             if subset is not None or augment == "none"]  # the whole set is the unaugmented reference
    records = run_all(run_one, calls, args.jobs)
    print(table(records))


if __name__ == "__main__":
    main()
