"""What each stabilizer does to a collapsing recipe: replay, minibatch discrimination, minibatch
stddev, spectral norm and EMA, each switched on alone, over several seeds.

    python benchmarks/stabilizers.py --base seed_fashion_mlp --seeds 0 1 2     # Fashion-MNIST, 1 epoch
    python benchmarks/stabilizers.py --base toy_grid --seeds 0 1 2              # the 2-D grid of 25 modes

Fashion-MNIST runs are scored like benchmarks/quality.py (own feature network, not Inception) and
appended to results/quality.jsonl; grid runs like benchmarks/toy2d.py, appended to results/toy2d.jsonl.
Prints a markdown table per base (median [min, max] over seeds).
"""
from __future__ import annotations

import argparse

import quality
import toy2d

STABILIZERS = {
    "none": [],
    "replay": ["callbacks=replay"],
    "minibatch_discrimination": ["model.discriminator.minibatch_discrimination={num_kernels:100,kernel_dim:5}"],
    "minibatch_stddev": ["model.discriminator.minibatch_stddev=true"],
    "spectral_norm": ["model.discriminator.spectral_norm=true"],
    "ema": ["model.ema_decay=0.999"],
}
# The bases as the collapse-prone recipes they are: the seed MLP GAN, and the grid without its EMA.
BASES = {
    "seed_fashion_mlp": ["experiment=seed_fashion_mlp"],
    "default": [],
    "toy_grid": ["model.ema_decay=null"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=list(BASES), default="seed_fashion_mlp")
    parser.add_argument("--stabilizers", nargs="+", choices=list(STABILIZERS), default=list(STABILIZERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (separate processes)")
    args = parser.parse_args()

    def run(name: str, seed: int) -> dict:
        # later overrides win, so the stabilizer comes after the base (ema after ema_decay=null)
        overrides = BASES[args.base] + STABILIZERS[name]
        if args.base == "toy_grid":
            record = toy2d.run_one("grid", "non_saturating", seed, overrides + args.extra, tag=f"_{name}")
            record["loss"] = name  # the table's row label
            return record
        return quality.run_one(f"{args.base}+{name}", seed, args.epochs, args.num_samples, args.extra,
                               recipe_overrides=overrides)

    records = quality.run_all(run, [(name, seed) for name in args.stabilizers for seed in args.seeds], args.jobs)
    print(toy2d.table(records) if args.base == "toy_grid" else quality.table(records))


if __name__ == "__main__":
    main()
