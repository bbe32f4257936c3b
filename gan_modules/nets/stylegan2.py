"""StyleGAN2 (Karras et al. 2020, "Analyzing and improving the image quality of StyleGAN"), in plain PyTorch.

Generator: the mapping network of StyleGAN (z -> w, learning-rate multiplier 0.01) and a synthesis
network of *modulated* 3x3 convolutions: each style scales the conv's input channels (modulation),
and the output is rescaled to unit variance per output channel (demodulation), which replaces
AdaIN's instance normalisation and the droplet artefacts it caused. Per-pixel noise and a bias
follow every conv. The skip architecture: every resolution has its own toRGB (a modulated 1x1
conv without demodulation) and the images are upsampled and summed. Fixed resolution: nothing grows.

Discriminator: residual blocks (two 3x3 convs and a 1x1 skip, summed and scaled by 1/sqrt(2)) down
to 4x4, then minibatch standard deviation, a 3x3 conv and two dense layers.

Up- and downsampling are depthwise convolutions with the [1, 3, 3, 1] binomial filter (a transposed
convolution with stride 2 to upsample, a strided convolution to downsample), so no custom CUDA op is
needed: the networks run on any device and export to ONNX. Weights use the equalized learning rate
(``layers.EqualizedConv2d``/``EqualizedLinear``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_modules.nets.common import (OUTPUT_RANGES, DiscriminatorOutput, check_pack, check_pack_init, check_size, image_shape,
                                     init_packed_input_, make_output_activation, pack_samples)
from gan_modules.nets.layers import ConstantInput, EqualizedConv2d, EqualizedLinear, MinibatchStdDev, NoiseInjection
from gan_modules.nets.progressive import channels_at
from gan_modules.nets.stylegan import NOISE_MODES, StyleLatents

ACTIVATION_GAIN = math.sqrt(2.0)  # keeps the signal's magnitude through LeakyReLU(0.2)


def power_of_two_shape(shape: Sequence[int], owner: str) -> tuple[int, int, int]:
    """``(C, R, R)`` with R a power of two >= 4, or an error that says how to get there."""
    checked = image_shape(shape, owner)
    resolution = checked[1]
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{owner} needs square power-of-two images of at least 4x4, got {list(checked)}: pad or "
                         "resize the data (e.g. dataset.image_size=32).")
    return checked


def _binomial_filter(channels: int) -> Tensor:
    """The normalised 4x4 [1, 3, 3, 1] filter, one copy per channel (for a depthwise conv)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).expand(channels, 1, 4, 4).contiguous()


def upsample_2x(x: Tensor) -> Tensor:
    """Double the resolution: zero insertion and the binomial filter (gain 4 keeps the mean)."""
    channels = x.shape[1]
    kernel = (_binomial_filter(channels) * 4.0).to(x)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)


def downsample_2x(x: Tensor) -> Tensor:
    """Halve the resolution: the binomial filter, then every second pixel."""
    channels = x.shape[1]
    return F.conv2d(x, _binomial_filter(channels).to(x), stride=2, padding=1, groups=channels)


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled per sample by a style, ``s = affine(w)``, and whose output
    channels are rescaled to unit variance (``demodulate``).

    Written as "scale the input, convolve with the shared weight, rescale the output", which is the
    same as convolving each sample with its own modulated weight, and keeps the batch dimension
    free (one ordinary conv, no per-sample grouped conv).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.demodulate = bool(demodulate)
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size))
        self.weight_scale = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        # Styles start at 1 (bias init 1): the conv starts as an ordinary equalized conv.
        self.affine = EqualizedLinear(w_dim, self.in_channels, gain=1.0, bias_init=1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_scale
        x = x * styles.view(-1, self.in_channels, 1, 1).to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        if self.demodulate:
            # 1 / std of each output channel of the modulated weight, per sample: (B, out).
            power = (weight.unsqueeze(0) * styles.view(-1, 1, self.in_channels, 1, 1)).square().sum(dim=(2, 3, 4))
            x = x * torch.rsqrt(power + 1e-8).view(-1, self.out_channels, 1, 1).to(x.dtype)
        return x

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}")


class SynthesisLayer(nn.Module):
    """[upsample 2x] -> modulated 3x3 conv -> noise -> bias -> LeakyReLU(0.2) (with gain sqrt 2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = bool(upsample)
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.noise = NoiseInjection(out_channels)
        self.bias = nn.Parameter(torch.zeros(int(out_channels)))

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None, use_noise: bool) -> Tensor:
        if self.upsample:
            x = upsample_2x(x)
        x = self.conv(x, w)
        if use_noise:
            x = self.noise(x, noise)
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * ACTIVATION_GAIN


class ToRGB(nn.Module):
    """A modulated 1x1 conv to the image's channels, without demodulation (its output is the image)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(int(out_channels)))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


class StyleGAN2Generator(StyleLatents, nn.Module):
    """z (B, z_dim) -> images (B, *out_shape), square power-of-two images of at least 4x4.

    The same controllable-generation interface as ``StyleGANGenerator`` (``map``, ``broadcast``,
    ``truncate``, ``mix``, ``synthesis``, ``make_noise``, ``w_avg``), so generate.py's truncation,
    style-mixing grids and sweeps work on it. ``num_ws = 2 * resolutions``: the 4x4 block's conv,
    then two convs per higher resolution, and the last toRGB; each toRGB shares the w of the next
    block's first conv, as in the paper's code.
    """

    def __init__(self, out_shape: Sequence[int], z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, channel_base: int = 16384, max_channels: int = 512,
                 style_mixing_prob: float = 0.9, w_avg_beta: float = 0.995, output_activation: str = "tanh") -> None:
        super().__init__()
        shape = power_of_two_shape(out_shape, "StyleGAN2Generator")
        self.out_shape = shape
        self.activation = make_output_activation(output_activation)
        self.output_range = OUTPUT_RANGES[output_activation]
        self.resolutions = [4 * 2**i for i in range(int(math.log2(shape[1])) - 1)]
        self.num_ws = 2 * len(self.resolutions)
        self.active_ws = self.num_ws
        self.init_latents(z_dim, w_dim, mapping_layers, mapping_lr_multiplier, style_mixing_prob, w_avg_beta)

        channels = [channels_at(r, channel_base, max_channels) for r in self.resolutions]
        self.const = ConstantInput(channels[0], 4)
        layers = [SynthesisLayer(channels[0], channels[0], self.w_dim)]
        for previous, current in zip(channels[:-1], channels[1:]):
            layers += [SynthesisLayer(previous, current, self.w_dim, upsample=True),
                       SynthesisLayer(current, current, self.w_dim)]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = nn.ModuleList(ToRGB(c, shape[0], self.w_dim) for c in channels)

    def make_noise(self, batch_size: int = 1, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[Tensor]:
        """Fixed per-pixel noise for every conv layer, ``(B, 1, res, res)`` each, to pass to ``synthesis``."""
        device = self.const.weight.device if device is None else device
        sizes = [self.resolutions[(i + 1) // 2] for i in range(len(self.layers))]
        return [torch.randn(batch_size, 1, r, r, generator=generator).to(device) for r in sizes]

    def synthesis(self, ws: Tensor, noise_mode: str = "random", noise: Sequence[Tensor] | None = None) -> Tensor:
        """ws (B, num_ws, w_dim) -> images. ``noise_mode``: "random" draws fresh noise, "none" leaves it
        out; ``noise`` (from ``make_noise``) uses that fixed noise and overrides the mode."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis expects ws of shape (B, {self.num_ws}, {self.w_dim}), got {list(ws.shape)}.")
        use_noise = noise is not None or noise_mode == "random"
        x = self.const(ws.shape[0])
        image = None
        for block, to_rgb in enumerate(self.to_rgb):
            first = 0 if block == 0 else 2 * block - 1  # this block's conv layers, and its first w
            for i in range(first, 2 * block + 1):
                layer_noise = None if noise is None else noise[i].to(x.dtype)
                x = self.layers[i](x, ws[:, i], layer_noise, use_noise)
            rgb = to_rgb(x, ws[:, 2 * block + 1])
            image = rgb if image is None else upsample_2x(image) + rgb
        return self.activation(image)

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "random") -> Tensor:
        return self.synthesis(self.styles(z, truncation_psi), noise_mode)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs, the second halving the resolution, plus a 1x1 skip; summed, times 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(downsample_2x(x))
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = F.leaky_relu(self.conv1(downsample_2x(x)), 0.2)
        return (x + skip) / math.sqrt(2.0)


class StyleGAN2Discriminator(nn.Module):
    """The residual discriminator: fromRGB at full resolution, residual blocks down to 4x4, then
    minibatch standard deviation, a 3x3 conv and two dense layers. Returns the logit per sample and
    the last hidden features; with ``pack`` = m (PacGAN) one per group of m consecutive samples,
    concatenated along the channels (fromRGB takes m*C channels)."""

    def __init__(self, in_shape: Sequence[int], channel_base: int = 16384, max_channels: int = 512,
                 mbstd_group_size: int = 4, pack: int = 1, pack_init: str = "per_sample") -> None:
        super().__init__()
        self.pack = check_pack(pack)
        pack_init = check_pack_init(pack_init)
        shape = power_of_two_shape(in_shape, "StyleGAN2Discriminator")
        resolution = shape[1]
        self.in_shape = shape
        resolutions = [resolution // 2**i for i in range(int(math.log2(resolution)) - 1)]  # r, r/2, ..., 4
        channels = [channels_at(r, channel_base, max_channels) for r in resolutions]
        self.from_rgb = EqualizedConv2d(self.pack * shape[0], channels[0], 1)
        if pack_init == "per_sample":
            init_packed_input_(self.from_rgb, self.pack)
        self.blocks = nn.ModuleList(DiscriminatorBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        last = channels[-1]
        self.mbstd = MinibatchStdDev(check_size("mbstd_group_size", mbstd_group_size))
        self.conv = EqualizedConv2d(last + 1, last, 3)
        self.dense = EqualizedLinear(last * 16, last)
        self.out = EqualizedLinear(last, 1, gain=1.0)
        self.feature_dim = last

    def features(self, x: Tensor) -> Tensor:
        """The input of the last layer: ``(B / pack, feature_dim)``."""
        x = F.leaky_relu(self.from_rgb(pack_samples(x, self.pack)), 0.2)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
        return F.leaky_relu(self.dense(x.flatten(1)), 0.2)

    def logit(self, features: Tensor) -> Tensor:
        return self.out(features).squeeze(1)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = self.features(x)
        return DiscriminatorOutput(self.logit(features), features=features)
