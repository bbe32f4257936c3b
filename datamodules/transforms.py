"""Per-sample image transforms and an in-memory uint8 image dataset.

Transforms are small classes rather than lambdas so that datasets stay
picklable for DataLoader worker processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


def resize_bilinear(x: Tensor, size: int) -> Tensor:
    """Resize a float (C, H, W) image to (C, size, size) bilinearly (antialiased)."""
    if x.shape[-2:] == (size, size):
        return x
    out = F.interpolate(x.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.squeeze(0)


def pad_center(x: Tensor, size: int, fill: float = 0.0) -> Tensor:
    """Centre a (C, H, W) image on a (C, size, size) canvas filled with ``fill``."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad a {h}x{w} image to {size}x{size}; use resize='interpolate'")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top), value=fill)


class UInt8ToRange:
    """Map a uint8 (C, H, W) image to float32 in [lo, hi], optionally resized.

    ``resize`` is None (keep size), "pad" (centre on a background canvas) or
    "interpolate" (bilinear). Padding happens in [0, 1] with 0, the background
    of MNIST-like data, so the border ends up exactly at ``lo``.
    """

    def __init__(self, value_range: tuple[float, float], image_size: int | None = None,
                 resize: str | None = None) -> None:
        self.lo, self.hi = value_range
        self.image_size = image_size
        self.resize = resize

    def __call__(self, img: Tensor) -> Tensor:
        x = img.to(torch.float32, copy=True).div_(255.0)  # copy: never touch the stored tensor
        if self.image_size is not None and self.resize == "pad":
            x = pad_center(x, self.image_size)
        elif self.image_size is not None and self.resize == "interpolate":
            x = resize_bilinear(x, self.image_size).clamp_(0.0, 1.0)
        return x.mul_(self.hi - self.lo).add_(self.lo)


class UnitToRange:
    """Map a float (C, H, W) image in [0, 1] to [lo, hi]."""

    def __init__(self, value_range: tuple[float, float]) -> None:
        self.lo, self.hi = value_range

    def __call__(self, x: Tensor) -> Tensor:
        return x * (self.hi - self.lo) + self.lo


class TensorImageDataset(Dataset):
    """Images held in memory as one (N, C, H, W) tensor, with int64 labels.

    Each item is ``(transform(images[i]), labels[i])``; the stored tensor is
    usually uint8 so that the float copy is made per item, not up front.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform=None) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"expected images (N,C,H,W) and labels (N,), got {tuple(images.shape)} "
                             f"and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]
