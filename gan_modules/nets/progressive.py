"""What every progressively grown network shares (ProGAN, StyleGAN): the stage and fade-in alpha.

A network built for ``resolution = 2^k`` has ``k - 1`` stages: stage ``s`` works at ``4 * 2^s``
pixels. While a new stage fades in, ``alpha`` goes from 0 to 1: at 0 the network computes exactly
what the previous stage computed (a generator's output upsampled, a discriminator's on the
downsampled input), at 1 the new block has taken over.

``stage`` and ``alpha`` are buffers: they travel with ``state_dict`` into every checkpoint (and
into the EMA copy of a generator), so a network loaded for sampling works at the resolution it was
trained to. The progressive-growing callback (``callbacks/progressive.py``) sets them; a network
that nothing sets stays fully grown (the last stage, alpha 1), which is fixed-resolution training.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_modules.nets.common import check_size


def stage_count(resolution: int) -> int:
    """The number of stages from 4x4 up to ``resolution`` (a power of two, at least 4)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"Progressive networks need a power-of-two image size of at least 4, got {resolution}: "
                         "pad or resize the data (e.g. dataset=fashion_mnist dataset.image_size=32).")
    return int(math.log2(resolution)) - 1


def channels_at(resolution: int, channel_base: int, max_channels: int) -> int:
    """Feature maps at a resolution: ``channel_base / resolution``, capped at ``max_channels``
    (ProGAN's schedule: constant width at low resolutions, halving above)."""
    channel_base, max_channels = check_size("channel_base", channel_base), check_size("max_channels", max_channels)
    return max(1, min(max_channels, channel_base // resolution))


def upsample(x: Tensor) -> Tensor:
    """2x nearest-neighbour upsampling (each pixel becomes a 2x2 block)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample(x: Tensor) -> Tensor:
    """2x average-pool downsampling: the exact inverse of ``upsample`` on block-constant images."""
    return F.avg_pool2d(x, 2)


def fade(old: Tensor, new: Tensor, alpha: Tensor) -> Tensor:
    """``lerp(old, new, alpha)`` in the wider of the two dtypes: under CUDA autocast a conv output is
    bf16/fp16 while an upsampled one is fp32, and ``torch.lerp`` takes no mixed dtypes."""
    dtype = torch.promote_types(old.dtype, new.dtype)
    return torch.lerp(old.to(dtype), new.to(dtype), alpha.to(dtype))


class ProgressiveNet(nn.Module):
    """Base class: holds ``stage`` and ``alpha`` for a network that grows to ``resolution``.

    The forward pass picks its blocks by the stage, a Python decision: reading the buffer there would
    wait for the device at every forward. So the pair is mirrored on the host (``stage_index``,
    ``alpha_value``), set by ``set_progress`` and read again from the buffers after a state dict is
    loaded; the buffers carry them into checkpoints.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.num_stages = stage_count(int(resolution))
        self.register_buffer("stage", torch.tensor(self.num_stages - 1, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))
        self._progress_on_host: tuple[int, float] | None = (self.num_stages - 1, 1.0)

    @property
    def stage_index(self) -> int:
        """``stage`` as a Python int (no device read)."""
        return self._host_progress()[0]

    @property
    def alpha_value(self) -> float:
        """``alpha`` as a Python float (no device read)."""
        return self._host_progress()[1]

    def _host_progress(self) -> tuple[int, float]:
        if self._progress_on_host is None:  # once after each load
            self._progress_on_host = (int(self.stage), float(self.alpha))
        return self._progress_on_host

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._progress_on_host = None  # the buffers may hold another stage now

    @property
    def current_resolution(self) -> int:
        return 4 * 2 ** self.stage_index

    def set_progress(self, stage: int, alpha: float) -> None:
        """Work at ``stage`` (0 = 4x4) with the newest block faded in by ``alpha`` in [0, 1]."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage must be in [0, {self.num_stages - 1}] for this network, got {stage}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        alpha = float(alpha) if stage > 0 else 1.0  # nothing fades in at the first stage
        self.stage.fill_(int(stage))
        self.alpha.fill_(alpha)
        self._progress_on_host = (int(stage), alpha)

    def fading(self) -> bool:
        """True while the newest block is still being faded in."""
        return self.stage_index > 0 and self.alpha_value < 1.0


def fully_grown(net: nn.Module) -> bool:
    """True for a network at its last stage with alpha 1, and for any network that does not grow."""
    return not isinstance(net, ProgressiveNet) or (net.stage_index == net.num_stages - 1 and net.alpha_value == 1.0)
