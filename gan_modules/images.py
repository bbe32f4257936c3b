"""Turning generator outputs into pictures: value ranges, uint8 arrays, PNG grids, logger hand-off."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gan_modules.atomic_files import atomic_write


def to_unit_range(x: Tensor, value_range: Sequence[float] | None) -> Tensor:
    """Map images from ``value_range`` to [0, 1] (clamped)."""
    lo, hi = (0.0, 1.0) if value_range is None else (float(value_range[0]), float(value_range[1]))
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def to_uint8_hwc(x: Tensor, value_range: Sequence[float] | None) -> Tensor:
    """(N, C, H, W) floats in ``value_range`` -> (N, H, W, C) uint8, the layout evaluators read."""
    return (to_unit_range(x, value_range) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def save_grid(x: Tensor, path: str | Path, value_range: Sequence[float] | None, nrow: int = 8) -> Path:
    """A PNG grid, written through a temporary file: a failed write leaves an existing file as it was."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:  # a handle has no suffix: name the format
        save_image(to_unit_range(x.detach().float().cpu(), value_range), handle, nrow=nrow, padding=2,
                   pad_value=1.0, format="png")
    return path


def grid_tensor(x: Tensor, value_range: Sequence[float] | None, nrow: int = 8) -> Tensor:
    return make_grid(to_unit_range(x.detach().float().cpu(), value_range), nrow=nrow, padding=2, pad_value=1.0)


def log_image_file(trainer, tag: str, path: Path, step: int) -> None:
    """Hand a PNG already written to the run folder to every logger that accepts images.

    Never assumes TensorBoard: each logger type is handled by what it offers; CSV gets nothing
    (the PNG in the run folder is the record).
    """
    from PIL import Image

    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            import numpy as np

            array = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(tag, array, global_step=step, dataformats="HWC")
        elif kind == "WandbLogger":
            logger.log_image(key=tag, images=[str(path)], step=None)
        elif kind == "MLFlowLogger":
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=tag)
