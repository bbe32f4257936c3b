"""Score a checkpoint or an npz of samples against a dataset split, offline.

    python evaluate.py checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt
    python evaluate.py samples=samples.npz dataset=fashion_mnist num_real=10000

Prints a table and one JSON line (metrics, the real-vs-real floor, and the protocol). Image
metrics use the project's own feature network, not Inception; the output says which one.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from gan_modules.checkpoints import load_generator
from gan_modules.nets.conditional import cycling_labels, is_conditional
from gan_modules.sampling import sample_in_batches
from gan_modules.images import to_unit_range
from gan_modules.metrics.evaluation import (FEATURE_NET_FOR, dataset_config, score_images, score_points,
                                            unit_range_datamodule)
from gan_modules.metrics.features import load_feature_net

DEFAULTS = Path(__file__).resolve().parent / "conf" / "evaluate.yaml"


def parse_args(argv: list[str]) -> DictConfig:
    cfg = OmegaConf.load(DEFAULTS)
    unknown = sorted({a.split("=", 1)[0] for a in argv} - set(cfg.keys()))
    if unknown:
        raise SystemExit(f"evaluate.py: unknown option(s) {unknown}; options: {', '.join(cfg.keys())}")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv))
    if (cfg.checkpoint is None) == (cfg.samples is None):
        raise SystemExit("evaluate.py: give exactly one of checkpoint=PATH or samples=FILE.npz")
    if cfg.samples is not None and cfg.dataset is None:
        raise SystemExit("evaluate.py: with samples=FILE.npz also give dataset=NAME (e.g. fashion_mnist)")
    if cfg.split not in ("test", "train"):
        raise SystemExit(f"evaluate.py: split must be test or train, got {cfg.split!r}")
    return cfg


@torch.no_grad()
def samples_from_checkpoint(path: str, n: int, seed: int, trust: bool = False) -> tuple[torch.Tensor, DictConfig]:
    generator, run_cfg = load_generator(path, trust=trust)
    noise = torch.Generator().manual_seed(seed)
    z = torch.cat([torch.randn(min(500, n - i), generator.z_dim, generator=noise) for i in range(0, n, 500)])
    # A conditional model is scored on every class equally often, as the test splits are balanced.
    labels = cycling_labels(n, generator.num_classes) if is_conditional(generator) else None
    out = sample_in_batches(generator, z, labels)
    if out.dim() == 4:  # the same uint8 quantisation an npz goes through
        out = (to_unit_range(out, generator.output_range) * 255).round() / 255
    return out, run_cfg


def samples_from_npz(path: str, n: int) -> torch.Tensor:
    if not Path(path).is_file():
        raise SystemExit(f"evaluate.py: {path} does not exist")
    array = np.load(path)["arr_0"][:n]
    if array.ndim == 4:
        if array.dtype != np.uint8:
            raise SystemExit(f"evaluate.py: image samples must be uint8 N x H x W x C, got {array.dtype}")
        return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0
    return torch.from_numpy(array.astype(np.float32))


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` pixels: undoes the padding of e.g. 28x28 data served at 32x32."""
    height, width = images.shape[-2:]
    if not 0 < size <= min(height, width):
        raise SystemExit(f"evaluate.py: crop={size} does not fit {height}x{width} samples")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.checkpoint is not None:
        fake, run_cfg = samples_from_checkpoint(cfg.checkpoint, cfg.num_samples, cfg.seed, bool(cfg.trust_checkpoint))
        data_cfg = dataset_config(cfg.dataset) if cfg.dataset else run_cfg.dataset
    else:
        fake, data_cfg = samples_from_npz(cfg.samples, cfg.num_samples), dataset_config(cfg.dataset)
    datamodule = unit_range_datamodule(data_cfg)
    if fake.dim() == 2:
        return score_points(fake, datamodule)
    if cfg.crop is not None:
        fake = center_crop(fake, int(cfg.crop))
    if tuple(fake.shape[1:]) != tuple(datamodule.sample_shape):
        raise SystemExit(f"evaluate.py: samples have shape {list(fake.shape[1:])}, the dataset {list(datamodule.sample_shape)}")
    name = cfg.feature_net or FEATURE_NET_FOR.get(type(datamodule).__name__)
    if name is None:
        raise SystemExit("evaluate.py: no shipped feature network for this dataset; pass feature_net=NAME")
    net, info = load_feature_net(name)
    result = score_images(fake, datamodule, net, info, cfg.split, cfg.num_real, cfg.seed, cfg.floor)
    result["protocol"]["crop"] = cfg.crop
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="samples vs real" + (" (floor: real vs real)" if "floor" in result else ""))
    table.add_column("metric")
    table.add_column("samples", justify="right")
    if "floor" in result:
        table.add_column("floor", justify="right")
    for key, value in result["metrics"].items():
        if isinstance(value, (int, float)):
            row = [key, f"{value:.4g}"] + ([f"{result['floor'][key]:.4g}"] if "floor" in result else [])
            table.add_row(*row)
    console = Console(stderr=True)
    console.print(table)
    if "note" in result["protocol"]:
        console.print(result["protocol"]["note"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    result = evaluate(cfg)
    print_table(result)
    line = json.dumps(result)
    print(line)
    if cfg.json:
        Path(cfg.json).write_text(line + "\n")
    return result


if __name__ == "__main__":
    from gan_modules.errors import report_user_errors

    with report_user_errors("evaluate.py"):  # a bad file or value: one line naming it, not a traceback
        main()
