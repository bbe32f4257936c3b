"""DCGAN after Radford et al. (2016): all-convolutional, BatchNorm, ReLU in G, LeakyReLU in D.

Works for any square size ``b * 2**n`` with ``3 <= b <= 7`` and ``n >= 1`` (28, 32, 64, 128, ...):
G projects z to a ``b x b`` map with one transposed conv, then doubles the resolution ``n`` times;
D mirrors it and reads one logit with a ``b x b`` conv. No hidden fully connected layers.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from torch import Tensor, nn

from gan_modules.nets.layers import MinibatchStdDev, apply_spectral_norm
from gan_modules.nets.common import (
    DiscriminatorOutput,
    OUTPUT_RANGES,
    check_pack,
    check_pack_init,
    check_size,
    dcgan_init_,
    image_shape,
    make_minibatch_discrimination,
    make_output_activation,
    init_packed_input_,
    pack_samples,
)

NORMS = ("batch", "layer", "instance", "none")


def split_size(size: int) -> tuple[int, int]:
    """Write ``size`` as ``base * 2**doublings`` with 3 <= base <= 7, or raise a clear error."""
    base, doublings = size, 0
    while base > 7 and base % 2 == 0:
        base, doublings = base // 2, doublings + 1
    if not 3 <= base <= 7 or doublings < 1:
        raise ValueError(
            f"DCGAN cannot produce {size}x{size} images: the size must be b * 2^n with 3 <= b <= 7 and "
            "n >= 1 (e.g. 28, 32, 48, 64, 128). Resize the data (dataset.image_size=...) or pick another model."
        )
    return base, doublings


def _widths(doublings: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels at each resolution from the smallest (index 0) to the last before the output."""
    base_channels, max_channels = check_size("base_channels", base_channels), check_size("max_channels", max_channels)
    return [min(base_channels * 2 ** (doublings - 1 - i), max_channels) for i in range(doublings)]


def _check_norm(kind: object) -> str:
    # Checked up front: a D too small for any normalised layer (8x8 images) would ignore a typo.
    if kind not in NORMS:
        raise ValueError(f"Unknown norm {kind!r} (model.discriminator.norm, or model.discriminator.backbone.norm "
                         f"under a conditional wrapper): choose one of {list(NORMS)}.")
    return str(kind)


def _norm(kind: str, channels: int) -> nn.Module:
    _check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation over C, H, W: safe with gradient penalties
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DCGANGenerator(nn.Module):
    def __init__(
        self,
        out_shape: Sequence[int],
        z_dim: int = 100,
        base_channels: int = 64,
        max_channels: int = 512,
        output_activation: str = "tanh",
    ) -> None:
        super().__init__()
        channels, size, _ = image_shape(out_shape, "DCGAN")
        base, doublings = split_size(size)
        self.z_dim = check_size("z_dim", z_dim)
        self.out_shape = (channels, size, size)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        widths = _widths(doublings, base_channels, max_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.z_dim, widths[0], base, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), make_output_activation(output_activation)]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Strided convs with LeakyReLU(0.2); no normalisation on the first layer, as in the paper.

    Stabilisers, all off by default: ``minibatch_stddev`` appends the ProGAN minibatch standard
    deviation as one more channel of the last ``b x b`` feature map, before the final conv;
    ``minibatch_discrimination`` (``{num_kernels, kernel_dim}``) flattens that map, appends Salimans
    et al.'s closeness features and reads the logit with a Linear instead of the final conv (the
    same map, a ``b x b`` conv over a ``b x b`` input is a Linear); ``spectral_norm`` normalises
    every conv and Linear (use it with ``norm: none``, as SNGAN does). ``pack`` (PacGAN's m) judges
    m samples at once, stacked along the channels: the first conv takes m*C channels and D returns
    B/m logits.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "batch",
        negative_slope: float = 0.2,
        minibatch_discrimination: Mapping[str, int] | None = None,
        minibatch_stddev: bool = False,
        spectral_norm: bool = False,
        pack: int = 1,
        pack_init: str = "per_sample",
    ) -> None:
        super().__init__()
        channels, size, _ = image_shape(in_shape, "DCGAN")
        norm = _check_norm(norm)
        pack_init = check_pack_init(pack_init)
        base, doublings = split_size(size)
        self.in_shape = (channels, size, size)
        self.pack = check_pack(pack)
        widths = _widths(doublings, base_channels, max_channels)[::-1]  # largest resolution first
        layers: list[nn.Module] = [nn.Conv2d(self.pack * channels, widths[0], 4, 2, 1), nn.LeakyReLU(negative_slope, True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), _norm(norm, w_out), nn.LeakyReLU(negative_slope, True)]
        channels = widths[-1]
        if minibatch_stddev:
            layers.append(MinibatchStdDev())
            channels += 1
        mbd = make_minibatch_discrimination(channels * base * base, minibatch_discrimination)
        if mbd is None:
            layers.append(nn.Conv2d(channels, 1, base, 1, 0))
        else:
            layers += [nn.Flatten(), mbd, nn.Linear(mbd.out_features, 1)]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)
        if pack_init == "per_sample":
            init_packed_input_(self.net[0], self.pack)
        # The input of the last layer, (channels, b, b) before the final conv, for features/logit.
        self._head_shape = (channels, base, base) if mbd is None else (mbd.out_features,)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = self.features(x)
        return DiscriminatorOutput(self.logit(features), features=features)

    # For the conditional wrappers (nets/conditional.py), which build on the same split.
    @property
    def feature_dim(self) -> int:
        return math.prod(self._head_shape)

    def features(self, x: Tensor) -> Tensor:
        """The last layer's input, flattened: ``(B / pack, feature_dim)``."""
        return self.net[:-1](pack_samples(x, self.pack)).flatten(1)

    def logit(self, features: Tensor) -> Tensor:
        # A b x b conv over a b x b map is a Linear over the flattened map: unflatten and apply it.
        return self.net[-1](features.view(-1, *self._head_shape)).view(-1)
