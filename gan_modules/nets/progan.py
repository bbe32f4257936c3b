"""ProGAN (Karras et al. 2018, "Progressive growing of GANs"): networks that grow from 4x4.

Generator: the latent (pixel-normalised) goes through a dense layer to a 4x4 map, then one block
per resolution (nearest 2x upsampling, two 3x3 convs, each followed by LeakyReLU(0.2) and pixel
norm); a 1x1 "to RGB" conv per resolution gives the image. Discriminator: the mirror image, a 1x1
"from RGB" conv per resolution, blocks of two 3x3 convs and 2x average pooling, and at 4x4 the
minibatch standard deviation, a 3x3 and a 4x4 conv and one linear output. Every layer has an
equalized learning rate (``layers.EqualizedConv2d``).

While stage ``s`` fades in with weight ``alpha``, G's output is
``lerp(upsample(rgb_{s-1}(h_{s-1})), rgb_s(block_s(h_{s-1})), alpha)`` and D's first features are
``lerp(from_rgb_{s-1}(downsample(x)), block_s(from_rgb_s(x)), alpha)``; at alpha = 0 both networks
compute exactly what the previous stage computed.

Widths follow ``channels_at``: ``channel_base / resolution`` capped at ``max_channels`` (the paper:
8192 and 512; the configs use CPU-sized defaults).
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from gan_modules.nets.layers import EqualizedConv2d, EqualizedLinear, MinibatchStdDev, PixelNorm
from gan_modules.nets.common import (
    OUTPUT_RANGES,
    DiscriminatorOutput,
    check_pack,
    check_pack_init,
    check_size,
    image_shape,
    make_output_activation,
    init_packed_input_,
    pack_samples,
)
from gan_modules.nets.progressive import ProgressiveNet, channels_at, downsample, fade, upsample


def _conv_act(in_ch: int, out_ch: int, kernel: int = 3, pixel_norm: bool = False, padding: int | None = None) -> list[nn.Module]:
    layers: list[nn.Module] = [EqualizedConv2d(in_ch, out_ch, kernel, padding=padding), nn.LeakyReLU(0.2)]
    return layers + [PixelNorm()] if pixel_norm else layers


class ProGANGenerator(ProgressiveNet):
    """Generator growing from 4x4 to ``out_shape`` (C, R, R), R a power of two."""

    def __init__(self, out_shape: Sequence[int], z_dim: int = 512, channel_base: int = 8192,
                 max_channels: int = 512, output_activation: str = "tanh") -> None:
        shape = image_shape(out_shape, "ProGANGenerator")
        super().__init__(shape[1])
        self.out_shape, self.z_dim = shape, check_size("z_dim", z_dim)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        width = [channels_at(4 * 2**s, channel_base, max_channels) for s in range(self.num_stages)]
        # The paper's first layer is a 4x4 transposed conv of the 1x1 latent: a dense layer, whose
        # gain sqrt(2)/4 gives each of the 16 output pixels the He scale of a 1x1 input.
        self.latent_norm = PixelNorm()
        self.dense = EqualizedLinear(self.z_dim, width[0] * 16, gain=math.sqrt(2.0) / 4)
        self.first = nn.Sequential(nn.LeakyReLU(0.2), PixelNorm(), *_conv_act(width[0], width[0], pixel_norm=True))
        self.blocks = nn.ModuleList(
            nn.Sequential(*_conv_act(width[s - 1], width[s], pixel_norm=True), *_conv_act(width[s], width[s], pixel_norm=True))
            for s in range(1, self.num_stages)
        )
        self.to_rgb = nn.ModuleList(EqualizedConv2d(w, shape[0], 1, gain=1.0) for w in width)
        self.output_activation = make_output_activation(output_activation)

    def forward(self, z: Tensor) -> Tensor:
        stage = self.stage_index
        h = self.first(self.dense(self.latent_norm(z)).view(z.shape[0], -1, 4, 4))
        previous = h
        for block in self.blocks[:stage]:
            previous = h
            h = block(upsample(h))
        image = self.to_rgb[stage](h)
        if self.fading():
            image = fade(upsample(self.to_rgb[stage - 1](previous)), image, self.alpha)
        return self.output_activation(image)


class ProGANDiscriminator(ProgressiveNet):
    """Discriminator (critic) for ``in_shape`` (C, R, R) that shrinks with the generator's stage:
    at stage ``s`` it takes ``4 * 2^s`` pixel images. Returns one logit per sample, or with ``pack``
    (PacGAN's m) one per group of m samples stacked along the channels: every "from RGB" conv then
    takes m*C channels (the minibatch stddev groups packed samples)."""

    def __init__(self, in_shape: Sequence[int], channel_base: int = 8192, max_channels: int = 512,
                 mbstd_group_size: int = 4, pack: int = 1, pack_init: str = "per_sample") -> None:
        shape = image_shape(in_shape, "ProGANDiscriminator")
        pack_init = check_pack_init(pack_init)
        super().__init__(shape[1])
        self.in_shape = shape
        self.pack = check_pack(pack)
        check_size("mbstd_group_size", mbstd_group_size)
        width = [channels_at(4 * 2**s, channel_base, max_channels) for s in range(self.num_stages)]
        self.from_rgb = nn.ModuleList(nn.Sequential(*_conv_act(self.pack * shape[0], w, kernel=1)) for w in width)
        if pack_init == "per_sample":
            for from_rgb in self.from_rgb:  # every stage's input layer is a packed first layer
                init_packed_input_(from_rgb[0], self.pack)
        # blocks[s - 1] takes stage s's features (width[s], 4*2^s pixels) to stage s - 1's.
        self.blocks = nn.ModuleList(
            nn.Sequential(*_conv_act(width[s], width[s]), *_conv_act(width[s], width[s - 1]), nn.AvgPool2d(2))
            for s in range(1, self.num_stages)
        )
        self.final = nn.Sequential(
            MinibatchStdDev(mbstd_group_size),
            *_conv_act(width[0] + 1, width[0]),
            *_conv_act(width[0], width[0], kernel=4, padding=0),
            nn.Flatten(),
            EqualizedLinear(width[0], 1, gain=1.0),
        )

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        stage = self.stage_index
        if x.shape[-1] != self.current_resolution or x.shape[-2] != self.current_resolution:
            raise ValueError(
                f"ProGANDiscriminator is at stage {stage} and takes {self.current_resolution}x"
                f"{self.current_resolution} images, got {list(x.shape[-2:])}. With progressive growing the "
                "datamodule serves the current resolution (callbacks=progressive); without it the "
                "networks are fully grown and take the dataset's full size."
            )
        # Packed before the fade's downsampling too: average pooling acts per channel, so packing
        # and downsampling commute.
        x = pack_samples(x, self.pack)
        h = self.from_rgb[stage](x)
        if stage > 0:
            h = self.blocks[stage - 1](h)
            if self.fading():
                h = fade(self.from_rgb[stage - 1](downsample(x)), h, self.alpha)
            for block in reversed(self.blocks[: stage - 1]):
                h = block(h)
        return DiscriminatorOutput(self.final(h).squeeze(1))
