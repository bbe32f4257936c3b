"""Finding, checking and lazily loading image files for ImageFolderDataModule."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import CorruptDatasetError

#: File name suffixes (lower case) that are treated as images.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})


def scan_images(root: Path) -> list[Path]:
    """All image files under ``root``, recursively, sorted; hidden files and folders are ignored."""
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        # Skip things like .ipynb_checkpoints/ or macOS ._ files.
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            found.append(p)
    return sorted(found)


def bad_image_message(path: Path | str, error: BaseException) -> str:
    """Error text for an unreadable image, naming the option that skips such files."""
    return (
        f"{path}: cannot read image ({type(error).__name__}: {error}); fix or delete the file, "
        "or set dataset.on_bad_image=skip to drop unreadable images"
    )


def find_unreadable(files: Sequence[Path]) -> list[tuple[Path, BaseException]]:
    """Files that PIL cannot identify or whose data fails ``verify()``."""
    bad = []
    for p in files:
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
            bad.append((p, e))
    return bad


def load_image(path: Path | str, size: int, channels: int) -> Tensor:
    """Load an image as uint8 (channels, size, size): shorter side resized to ``size``, then centre-cropped."""
    with Image.open(path) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # PIL wants palette transparency to go through RGBA
        img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class ImageFileDataset(Dataset):
    """Images loaded from disk on access, mapped to float32 in ``value_range``.

    ``skip_bad`` makes an image that fails to load (despite passing the setup
    check) be replaced by the next readable one, with a warning.
    """

    def __init__(self, files: Sequence[Path], labels: Sequence[int], image_size: int, channels: int,
                 value_range: tuple[float, float], skip_bad: bool = False) -> None:
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.image_size = image_size
        self.channels = channels
        self.lo, self.hi = value_range
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        for step in range(len(self.files)):
            i = (index + step) % len(self.files)
            try:
                img = load_image(self.files[i], self.image_size, self.channels)
            except Exception as e:
                if not self.skip_bad:
                    raise CorruptDatasetError(bad_image_message(self.files[i], e)) from e
                warnings.warn(bad_image_message(self.files[i], e) + "; using the next image instead")
                continue
            x = img.to(torch.float32).div_(255.0).mul_(self.hi - self.lo).add_(self.lo)
            return x, self.labels[i]
        raise CorruptDatasetError(f"none of the {len(self.files)} images could be loaded")
