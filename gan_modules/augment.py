"""Augmenting what the discriminator sees, for training on little data (``augment=`` config group).

An ``Augmentation`` is applied by the objective (``objectives.py``) to every batch before D judges it:
reals and fakes alike, in D's phase and in G's phase, and inside the input-gradient penalties (which
then differentiate through it). It must therefore be differentiable with respect to its input.
``observe`` lets an adaptive pipeline read D's outputs on the (augmented) reals of each D step;
what it returns from ``statistics`` is logged every step. Its state (e.g. ADA's probability) lives in
buffers, so it is saved in checkpoints with the module and restored on resume.
"""
from __future__ import annotations

from torch import Tensor, nn


class Augmentation(nn.Module):
    """The interface; this base class changes nothing (``augment=none``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def observe(self, real_logits: Tensor, step: int) -> None:
        """D's logits on this D step's augmented reals (detached); ``step`` counts D steps."""

    def statistics(self) -> dict[str, Tensor]:
        """Values to log every step (detached tensors)."""
        return {}

    def check_data(self, sample_shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the fix when this augmentation cannot work on samples of this shape
        (called before training by ``build.validate_setup``)."""


class NoAugmentation(Augmentation):
    """D sees the data as they are (the default)."""
