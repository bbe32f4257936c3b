"""The Fashion-MNIST DCGAN of seed 000 (a Keras tutorial), layer for layer in PyTorch.

Keras details kept on purpose: Glorot-uniform init, BatchNormalization(momentum=0.99, eps=1e-3)
(PyTorch's momentum is 1 - Keras's), 5x5 kernels with "same" padding, Dropout 0.4 in D.
The final sigmoid of the Keras D is folded into the loss (D returns logits).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor, nn

from gan_modules.nets.layers import MinibatchStdDev, apply_spectral_norm
from gan_modules.nets.common import (
    DiscriminatorOutput,
    OUTPUT_RANGES,
    check_pack,
    check_pack_init,
    check_size,
    image_shape,
    keras_init_,
    make_minibatch_discrimination,
    make_output_activation,
    init_packed_input_,
    pack_samples,
)


def _keras_bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def _quarter(size: int) -> int:
    if size % 4:
        raise ValueError(f"The seed DCGAN upsamples 4x from a dense layer: image size must be divisible by 4, got {size}.")
    return size // 4


class SeedDCGANGenerator(nn.Module):
    """Dense(7x7x128) -> BN -> ConvT(64, 5, s2) SELU -> BN -> ConvT(C, 5, s2) tanh."""

    def __init__(self, out_shape: Sequence[int], z_dim: int = 100, output_activation: str = "tanh") -> None:
        super().__init__()
        channels, size, _ = image_shape(out_shape, "The seed DCGAN")
        self.base = _quarter(size)
        self.z_dim = check_size("z_dim", z_dim)
        self.out_shape = (channels, size, size)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        self.project = nn.Linear(self.z_dim, 128 * self.base * self.base)
        self.net = nn.Sequential(
            _keras_bn(128),
            nn.ConvTranspose2d(128, 64, 5, 2, padding=2, output_padding=1),
            nn.SELU(),
            _keras_bn(64),
            nn.ConvTranspose2d(64, channels, 5, 2, padding=2, output_padding=1),
            make_output_activation(output_activation),
        )
        keras_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(z.shape[0], 128, self.base, self.base))


class SeedDCGANDiscriminator(nn.Module):
    """Conv(64, 5, s2) LeakyReLU(0.2) Dropout(0.4) -> Conv(128, 5, s2) LeakyReLU(0.2) Dropout(0.4) -> Dense(1).

    Stabilisers, all off by default (not part of the seed recipe): ``minibatch_stddev`` appends the
    ProGAN minibatch standard deviation as a 129th channel before flattening;
    ``minibatch_discrimination`` (``{num_kernels, kernel_dim}``) appends Salimans et al.'s closeness
    features before the Dense layer; ``spectral_norm`` normalises both convs and the Dense layer.
    ``pack`` (PacGAN's m) judges m samples at once, stacked along the channels: the first conv takes
    m*C channels and D returns B/m logits.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        dropout: float = 0.4,
        minibatch_discrimination: Mapping[str, int] | None = None,
        minibatch_stddev: bool = False,
        spectral_norm: bool = False,
        pack: int = 1,
        pack_init: str = "per_sample",
    ) -> None:
        super().__init__()
        channels, size, _ = image_shape(in_shape, "The seed DCGAN")
        pack_init = check_pack_init(pack_init)
        self.in_shape = (channels, size, size)
        self.pack = check_pack(pack)
        quarter = _quarter(size)
        layers: list[nn.Module] = [
            nn.Conv2d(self.pack * channels, 64, 5, 2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Conv2d(64, 128, 5, 2, padding=2),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
        ]
        features = 128
        if minibatch_stddev:
            layers.append(MinibatchStdDev())
            features += 1
        layers.append(nn.Flatten())
        features *= quarter * quarter
        mbd = make_minibatch_discrimination(features, minibatch_discrimination)
        if mbd is not None:
            layers.append(mbd)
            features = mbd.out_features
        layers.append(nn.Linear(features, 1))
        self.net = nn.Sequential(*layers)
        keras_init_(self)
        if pack_init == "per_sample":
            init_packed_input_(self.net[0], self.pack)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        return DiscriminatorOutput(self.net(pack_samples(x, self.pack)).view(-1))
