"""Datamodule for a folder of image files (png, jpg, jpeg, bmp, webp, gif).

Images are found recursively under ``root`` and loaded lazily, one per item:
shorter side resized to ``image_size``, then centre-cropped to a square.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from datamodules.base import (
    CorruptDatasetError,
    DatasetNotFoundError,
    GANDataModule,
    check_choice,
    check_fraction,
    check_int,
)
from datamodules.image_files import (
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    bad_image_message,
    find_unreadable,
    scan_images,
)

LABEL_MODES = ("auto", "folders", "none")
BAD_IMAGE_MODES = ("error", "skip")


class ImageFolderDataModule(GANDataModule):
    """Images under ``root``, optionally labelled by their first-level sub-folder.

    labels: "auto" uses sorted sub-folder names as classes 0..K-1 when every
    image lies in a sub-folder and is unlabelled (y = -1) otherwise;
    "folders" requires sub-folders; "none" is always unlabelled.
    on_bad_image: "error" raises on an unreadable file, "skip" drops them.
    test_fraction: share of images held out (random, fixed by ``seed``) for
    val/test; with 0 the val and test loaders serve the training images.
    """

    _shape_hint = "dataset.image_size / dataset.channels"

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        labels: str = "auto",
        on_bad_image: str = "error",
        test_fraction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if root is None or not str(root).strip():
            raise ValueError("dataset.root is not set: give the folder of your images, e.g. "
                             "dataset.root=/path/to/images (class sub-folders become labels)")
        self.root = Path(root).expanduser()
        self.image_size = check_int("image_size", image_size, 1)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.channels = channels
        self.labels = check_choice("labels", labels, LABEL_MODES)
        self.on_bad_image = check_choice("on_bad_image", on_bad_image, BAD_IMAGE_MODES)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self._require_value_range()
        self._check_declared_shape()
        self._scan: tuple[list[Path], list[int], list[str]] | None = None
        # File names only (cached for setup): a wrong or empty root stops before any work.
        self.scan()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        if self.labels == "none":
            return None
        classes = self.scan()[2]
        return len(classes) or None

    @property
    def class_names(self) -> list[str]:
        """Sub-folder names in label order (empty when unlabelled)."""
        return list(self.scan()[2])

    def scan(self) -> tuple[list[Path], list[int], list[str]]:
        """Find the image files (names only, cached): returns files, labels and class names."""
        if self._scan is not None:
            return self._scan
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.root} does not exist; point dataset.root at your images, "
                "e.g. dataset.root=/path/to/images"
            )
        files = scan_images(self.root)
        if not files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DatasetNotFoundError(f"no images ({exts}) found under {self.root}; check dataset.root")
        top_level = [f for f in files if f.parent == self.root]
        if self.labels == "folders" and top_level:
            examples = ", ".join(str(f) for f in top_level[:3])
            raise ValueError(
                f"labels='folders' needs every image inside a class sub-folder of {self.root}, but "
                f"{len(top_level)} lie directly in it (e.g. {examples}); move them or set dataset.labels=none"
            )
        if self.labels == "none" or top_level:
            self._scan = (files, [-1] * len(files), [])
        else:
            classes = sorted({f.relative_to(self.root).parts[0] for f in files})
            index = {name: i for i, name in enumerate(classes)}
            self._scan = (files, [index[f.relative_to(self.root).parts[0]] for f in files], classes)
        return self._scan

    def _load(self) -> None:
        files, labels, _ = self.scan()
        bad = find_unreadable(files)
        if bad and self.on_bad_image == "error":
            raise CorruptDatasetError(bad_image_message(*bad[0]) + f" ({len(bad)} unreadable in all)")
        if bad:
            warnings.warn(
                f"skipping {len(bad)} unreadable image(s) under {self.root} (dataset.on_bad_image=skip), "
                f"e.g. {bad[0][0]}"
            )
            dropped = {p for p, _ in bad}
            kept = [(f, y) for f, y in zip(files, labels) if f not in dropped]
            if not kept:
                raise DatasetNotFoundError(f"all {len(files)} images under {self.root} are unreadable")
            files, labels = [f for f, _ in kept], [y for _, y in kept]
        n = len(files)
        n_test = 0 if self.test_fraction == 0 else min(n - 1, max(1, round(n * self.test_fraction)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        test_idx, train_idx = sorted(order[:n_test]), sorted(order[n_test:])
        skip = self.on_bad_image == "skip"
        args = (self.image_size, self.channels, self._require_value_range(), skip)
        self.train_dataset = ImageFileDataset([files[i] for i in train_idx], [labels[i] for i in train_idx], *args)
        if n_test:
            self.test_dataset = ImageFileDataset([files[i] for i in test_idx], [labels[i] for i in test_idx], *args)
        else:
            self.test_dataset = self.train_dataset
        self.val_dataset = self.test_dataset
