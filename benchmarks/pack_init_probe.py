"""How fast a packed discriminator learns to tell the 2-D grid from noise, by first-layer init.

A fixed task, no generator: D (the toy recipe's MLPDiscriminator, 3x128, Adam(1e-3, 0.5)) sees groups
of ``pack`` points, real ones from the 25-mode grid and fake ones uniform on [-5, 5]^2, and is trained
with the non-saturating D loss. Held-out accuracy is printed every ``--every`` steps for
``pack_init=dense`` and ``pack_init=per_sample`` (docs/packing.md says why they differ).

    python benchmarks/pack_init_probe.py                      # pack 4, 20,000 steps, seed 0
    python benchmarks/pack_init_probe.py --pack 1 --steps 5000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datamodules.toy2d import mixture_modes, sample_mixture  # noqa: E402
from gan_modules.nets.common import PACK_INITS  # noqa: E402
from gan_modules.nets.mlp import MLPDiscriminator  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def accuracy(d: MLPDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> float:
    with torch.no_grad():
        return 0.5 * ((d(real).logits > 0).float().mean() + (d(fake).logits < 0).float().mean()).item()


def probe(pack_init: str, pack: int, steps: int, every: int, batch: int, seed: int) -> list[tuple[int, float]]:
    modes, std = mixture_modes("grid")
    torch.manual_seed(seed)
    d = MLPDiscriminator([2], hidden=[128, 128, 128], pack=pack, pack_init=pack_init)
    opt = torch.optim.Adam(d.parameters(), 1e-3, betas=(0.5, 0.999))
    held_out_real = sample_mixture(modes, std, 4096 * pack, seed=10_000 + seed)[0]
    held_out_fake = torch.rand(4096 * pack, 2, generator=torch.Generator().manual_seed(20_000 + seed)) * 10 - 5
    noise = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps + 1):
        if step % every == 0:
            curve.append((step, accuracy(d, held_out_real, held_out_fake)))
        if step == steps:
            break
        real = sample_mixture(modes, std, batch, seed=seed * 1_000_003 + step)[0]
        fake = torch.rand(batch, 2, generator=noise) * 10 - 5
        loss = F.softplus(-d(real).logits).mean() + F.softplus(d(fake).logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=20_000)
    parser.add_argument("--every", type=positive_int, default=2_500)
    parser.add_argument("--batch", type=positive_int, default=256, help="points per step (a multiple of --pack)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.batch % args.pack:
        parser.error(f"--batch {args.batch} is not a multiple of --pack {args.pack}")
    torch.set_num_threads(1)
    curves = {name: probe(name, args.pack, args.steps, args.every, args.batch, args.seed) for name in PACK_INITS}
    print(f"held-out accuracy, grid against uniform noise, pack {args.pack}, seed {args.seed}")
    print("| step | " + " | ".join(PACK_INITS) + " |")
    print("|---|" + "---|" * len(PACK_INITS))
    for i, (step, _) in enumerate(curves[PACK_INITS[0]]):
        print(f"| {step} | " + " | ".join(f"{curves[name][i][1]:.3f}" for name in PACK_INITS) + " |")


if __name__ == "__main__":
    main()
