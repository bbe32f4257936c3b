"""Sample from a trained generator: the checkpoint alone is enough.

    python generate.py checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt num_samples=10000 \
        output=samples.npz seed=0 grid=grid.png

Writes ``arr_0`` as uint8 N x H x W x C for images (the layout standard evaluators read) or
float32 N x D for vector data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

from gan_modules.checkpoints import load_generator
from gan_modules.images import save_grid, to_uint8_hwc

DEFAULTS = Path(__file__).resolve().parent / "conf" / "generate.yaml"


def parse_args(argv: list[str]) -> DictConfig:
    cfg = OmegaConf.load(DEFAULTS)
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv))
        _ = cfg.checkpoint
    except ConfigKeyError as err:
        raise SystemExit(f"generate.py: unknown option ({err.msg.splitlines()[0]}). Options: {', '.join(cfg.keys())}")
    except MissingMandatoryValue:
        raise SystemExit("generate.py: give the checkpoint, e.g. checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt")
    if cfg.num_samples < 1 or cfg.batch_size < 1:
        raise SystemExit("generate.py: num_samples and batch_size must be >= 1.")
    return cfg


@torch.no_grad()
def generate(cfg: DictConfig) -> Path:
    generator, run_cfg = load_generator(cfg.checkpoint)
    generator.to(cfg.device)
    noise = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    chunks = []
    for start in range(0, cfg.num_samples, cfg.batch_size):
        n = min(cfg.batch_size, cfg.num_samples - start)
        z = torch.randn(n, generator.z_dim, generator=noise).to(cfg.device)
        chunks.append(generator(z).float().cpu())
    samples = torch.cat(chunks)
    is_image = samples.dim() == 4
    array = to_uint8_hwc(samples, generator.output_range).numpy() if is_image else samples.numpy().astype(np.float32)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, array)
    print(f"Wrote {len(array)} samples of shape {list(array.shape[1:])} ({array.dtype}) to {output}")
    if cfg.grid:
        if not is_image:
            raise SystemExit("generate.py: grid= needs image samples; this model makes vectors.")
        path = save_grid(samples[: cfg.grid_size], cfg.grid, generator.output_range)
        print(f"Wrote a grid of {min(cfg.grid_size, len(samples))} samples to {path}")
    return output


def main(argv: list[str] | None = None) -> Path:
    return generate(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
