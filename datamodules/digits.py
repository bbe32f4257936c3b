"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), available offline.

A tiny real image dataset: useful for smoke tests and quick experiments.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from datamodules.base import GANDataModule, check_fraction, check_int
from datamodules.transforms import TensorImageDataset, UnitToRange

_NATIVE_SIZE = 8
_MAX_VALUE = 16.0  # load_digits pixels are counts 0..16


class DigitsDataModule(GANDataModule):
    """sklearn ``load_digits``: 1x8x8 grayscale digits, optionally resized bilinearly.

    ``test_fraction`` of the images (random, fixed by ``seed``) form the
    val/test split; with 0 the val and test loaders serve the training images.
    """

    _shape_hint = "dataset.image_size"

    def __init__(self, image_size: int = _NATIVE_SIZE, test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size = check_int("image_size", image_size, 1)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self._require_value_range()
        self._check_declared_shape()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        return 10

    def _load(self) -> None:
        from sklearn.datasets import load_digits  # slow import: only when needed

        bunch = load_digits()
        x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / _MAX_VALUE
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        if self.image_size != _NATIVE_SIZE:
            # The set is tiny, so resize once here instead of per item.
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        n = x.shape[0]
        n_test = round(n * self.test_fraction)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
        transform = UnitToRange(self._require_value_range())
        self.train_dataset = TensorImageDataset(x[train_idx], y[train_idx], transform)
        self.test_dataset = TensorImageDataset(x[test_idx], y[test_idx], transform) if n_test else self.train_dataset
        self.val_dataset = self.test_dataset
