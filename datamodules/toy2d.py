"""2-D Gaussian-mixture toy data for mode-collapse experiments.

"ring": 8 Gaussians (std 0.01) on the unit circle at angles 2*pi*i/8.
"grid": 25 Gaussians (std 0.05) at {-4, -2, 0, 2, 4}^2.
Each sample picks a mode uniformly; its label is the mode index.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from datamodules.base import GANDataModule, check_choice, check_int

KINDS = ("ring", "grid")


def mixture_modes(kind: str) -> tuple[Tensor, float]:
    """Mode centres (K, 2) float32 and the per-coordinate std for a toy ``kind``."""
    check_choice("kind", kind, KINDS)
    if kind == "ring":
        angles = [2 * math.pi * i / 8 for i in range(8)]
        return torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float32), 0.01
    # Row-major: mode index = 5 * ix + iy for x = -4 + 2 * ix, y = -4 + 2 * iy.
    coords = (-4.0, -2.0, 0.0, 2.0, 4.0)
    return torch.tensor(list(itertools.product(coords, coords)), dtype=torch.float32), 0.05


def sample_mixture(modes: Tensor, std: float, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Draw ``n`` points (n, 2) and their mode labels (n,) from an equal-weight Gaussian mixture."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(modes.shape[0], (n,), generator=gen)
    points = modes[labels] + std * torch.randn(n, modes.shape[1], generator=gen)
    return points, labels


class Toy2DDataModule(GANDataModule):
    """In-memory 2-D Gaussian mixture: x of shape (2,), y = mode index.

    ``modes`` and ``std`` are available before setup for evaluation code.
    The train set has ``num_samples`` points; the test (and val) set is an
    independent draw of ``num_samples // 10``. Points are raw coordinates,
    so ``value_range`` must be None.
    """

    _shape_hint = "nothing on the dataset side (toy samples are always 2-D)"

    def __init__(
        self,
        kind: str = "ring",
        num_samples: int = 100_000,
        value_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if value_range is not None:
            raise ValueError(
                f"Toy2DDataModule serves raw 2-D coordinates, not images, so value_range must be null; "
                f"got {list(value_range)} (use a vector model with model.data_range=null)"
            )
        super().__init__(value_range=None, **kwargs)
        self.kind = check_choice("kind", kind, KINDS)
        self.num_samples = check_int("num_samples", num_samples, 1)
        self._modes, self._std = mixture_modes(self.kind)
        self._check_declared_shape()

    @property
    def modes(self) -> Tensor:
        """Mode centres, float32 (K, 2); label k means the sample was drawn around ``modes[k]``."""
        return self._modes.clone()

    @property
    def std(self) -> float:
        """Standard deviation of every mixture component, per coordinate."""
        return self._std

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def num_classes(self) -> int | None:
        return self._modes.shape[0]

    @property
    def is_image(self) -> bool:
        return False

    def _load(self) -> None:
        # Seeds 2s and 2s+1 keep train and test independent and distinct across seeds.
        x, y = sample_mixture(self._modes, self._std, self.num_samples, 2 * self.seed)
        tx, ty = sample_mixture(self._modes, self._std, max(1, self.num_samples // 10), 2 * self.seed + 1)
        self.train_dataset = TensorDataset(x, y)
        self.test_dataset = TensorDataset(tx, ty)
        self.val_dataset = self.test_dataset
