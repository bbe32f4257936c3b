"""StyleGAN's generator (Karras et al. 2019, "A style-based generator architecture for GANs").

A mapping network turns z into an intermediate latent w; the synthesis network starts from a
learned 4x4 constant and receives w as a *style* at every layer through AdaIN, with per-pixel noise
before each AdaIN for stochastic detail. Each resolution block takes two styles, so a sample is
described by ``ws: (B, num_ws, w_dim)``; giving the first layers one w and the rest another (style
mixing) splits coarse attributes (pose, shape) from fine ones (texture, colour).

The generator grows like ProGAN's (``ProgressiveNet``: ``stage``, ``alpha``); a network nobody grows
trains at its full resolution. StyleGAN v1's discriminator is ProGAN's
(``gan_modules.nets.progan.ProGANDiscriminator``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_modules.nets.layers import AdaIN, ConstantInput, EqualizedConv2d, EqualizedLinear, NoiseInjection, PixelNorm
from gan_modules.nets.common import OUTPUT_RANGES, check_size, image_shape, make_output_activation
from gan_modules.nets.progressive import ProgressiveNet, channels_at, fade, upsample

NOISE_MODES = ("random", "none")


class MappingNetwork(nn.Module):
    """z -> w: pixel norm on z, then ``num_layers`` equalized linear layers with LeakyReLU(0.2).

    ``lr_multiplier`` (0.01 in the paper) slows these layers down relative to the synthesis network,
    which keeps w's distribution from moving faster than the synthesis network can follow.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 8, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        num_layers = check_size("mapping_layers", num_layers)
        self.z_dim, self.w_dim = check_size("z_dim", z_dim), check_size("w_dim", w_dim)
        layers: list[nn.Module] = [PixelNorm()]
        for i in range(int(num_layers)):
            layers += [EqualizedLinear(self.z_dim if i == 0 else self.w_dim, self.w_dim, lr_multiplier=lr_multiplier),
                       nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class StyleLayer(nn.Module):
    """[3x3 conv] -> noise -> bias + LeakyReLU(0.2) -> AdaIN(style): one styled layer of the synthesis
    network. Without a conv (the constant's first layer) a learned bias takes the conv's place."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv: bool = True) -> None:
        super().__init__()
        self.conv = EqualizedConv2d(in_channels, out_channels, 3) if conv else None
        self.bias = None if conv else nn.Parameter(torch.zeros(out_channels))
        self.noise = NoiseInjection(out_channels)
        self.adain = AdaIN(out_channels, w_dim)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None, use_noise: bool) -> Tensor:
        if self.conv is not None:
            x = self.conv(x)  # its bias is added before the noise: addition commutes
        if use_noise:
            x = self.noise(x, noise)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return self.adain(F.leaky_relu(x, 0.2), w)


class StyleLatents:
    """The latent side of a style-based generator, shared by StyleGAN and StyleGAN2: z -> w (``map``),
    one w per layer (``broadcast``), the truncation trick (``truncate``), style mixing (``mix``) and
    the styles a training forward uses (``styles``: tracks ``w_avg``, mixes styles at random).

    The class using it sets ``mapping``, ``z_dim``, ``w_dim``, ``num_ws``, ``active_ws``, ``w_avg``
    (a buffer), ``w_avg_beta`` and ``style_mixing_prob``.
    """

    mapping: nn.Module
    z_dim: int
    w_dim: int
    num_ws: int
    w_avg: Tensor
    w_avg_beta: float
    style_mixing_prob: float
    training: bool

    def init_latents(self, z_dim: int, w_dim: int, mapping_layers: int, mapping_lr_multiplier: float,
                     style_mixing_prob: float, w_avg_beta: float) -> None:
        """Check and set the latent side's settings, and build the mapping network and ``w_avg``."""
        if not 0.0 <= style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}.")
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {w_avg_beta}.")
        self.z_dim, self.w_dim = check_size("z_dim", z_dim), check_size("w_dim", w_dim)
        self.style_mixing_prob, self.w_avg_beta = float(style_mixing_prob), float(w_avg_beta)
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, mapping_layers, mapping_lr_multiplier)
        # A buffer, so that checkpoints (and the EMA copy) carry it.
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

    def map(self, z: Tensor) -> Tensor:
        """z (B, z_dim) -> w (B, w_dim)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"{type(self).__name__} expects z of shape (B, {self.z_dim}), got {list(z.shape)}.")
        return self.mapping(z)

    def broadcast(self, w: Tensor) -> Tensor:
        """One w for every layer: (B, w_dim) -> (B, num_ws, w_dim)."""
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def truncate(self, w: Tensor, psi: float) -> Tensor:
        """The truncation trick: ``w_avg + psi * (w - w_avg)`` (psi 0: the mean; 1: unchanged)."""
        return torch.lerp(self.w_avg.to(w.dtype).expand_as(w), w, float(psi))

    def mix(self, ws_a: Tensor, ws_b: Tensor, crossover: int) -> Tensor:
        """The first ``crossover`` styles (coarse layers) from ``ws_a``, the rest (fine) from ``ws_b``."""
        if not 0 <= crossover <= self.num_ws:
            raise ValueError(f"crossover must be in [0, {self.num_ws}] (this generator has {self.num_ws} styles), "
                             f"got {crossover}.")
        return torch.cat([ws_a[:, :crossover], ws_b[:, crossover:]], dim=1)

    def styles(self, z: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """The styles ``(B, num_ws, w_dim)`` that ``forward(z)`` synthesises from."""
        w = self.map(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(torch.lerp(w.detach().mean(0).to(self.w_avg.dtype), self.w_avg, self.w_avg_beta))
        ws = self.broadcast(w)
        if self.training and self.style_mixing_prob > 0 and float(torch.rand(())) < self.style_mixing_prob:
            # Style-mixing regularisation: the layers after a random crossover (among those in use,
            # so that the mix shows) take a second code's w, so that neighbouring styles cannot rely
            # on being correlated.
            crossover = int(torch.randint(1, max(2, self.active_ws), ()))
            ws = self.mix(ws, self.broadcast(self.map(torch.randn_like(z))), crossover)
        if truncation_psi != 1.0:
            ws = self.truncate(ws, truncation_psi)
        return ws


class StyleGANGenerator(StyleLatents, ProgressiveNet):
    """z (B, z_dim) -> images (B, *out_shape) at the current stage's resolution.

    ``forward(z)`` is what training calls: in training mode it also tracks ``w_avg`` (the mean w,
    for the truncation trick) and applies style-mixing regularisation (``StyleLatents.styles``). The
    pieces are public for controllable generation: ``map``, ``truncate``, ``mix``, ``broadcast``,
    ``synthesis``.
    """

    def __init__(self, out_shape: Sequence[int], z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, channel_base: int = 8192, max_channels: int = 512,
                 style_mixing_prob: float = 0.9, w_avg_beta: float = 0.995, output_activation: str = "tanh") -> None:
        shape = image_shape(out_shape, "StyleGANGenerator")
        super().__init__(shape[1])
        self.out_shape = shape
        self.activation = make_output_activation(output_activation)  # checks the name first
        self.output_range = OUTPUT_RANGES[output_activation]
        self.num_ws = 2 * self.num_stages  # two styles per resolution block
        self.init_latents(z_dim, w_dim, mapping_layers, mapping_lr_multiplier, style_mixing_prob, w_avg_beta)

        channels = [channels_at(4 * 2**s, channel_base, max_channels) for s in range(self.num_stages)]
        self.const = ConstantInput(channels[0], 4)
        layers: list[StyleLayer] = []
        for s, c in enumerate(channels):
            layers.append(StyleLayer(c, c, self.w_dim, conv=False) if s == 0
                          else StyleLayer(channels[s - 1], c, self.w_dim))
            layers.append(StyleLayer(c, c, self.w_dim))
        self.layers = nn.ModuleList(layers)
        self.to_rgb = nn.ModuleList(EqualizedConv2d(c, shape[0], 1, gain=1.0) for c in channels)

    @property
    def active_ws(self) -> int:
        """How many styles the current stage uses (the layers of the blocks up to it)."""
        return 2 * (self.stage_index + 1)

    def make_noise(self, batch_size: int = 1, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[Tensor]:
        """Fixed per-pixel noise for every layer, ``(B, 1, res, res)`` each, to pass to ``synthesis``."""
        device = self.const.weight.device if device is None else device
        return [torch.randn(batch_size, 1, 4 * 2 ** (i // 2), 4 * 2 ** (i // 2), generator=generator).to(device)
                for i in range(self.num_ws)]

    # --- images -----------------------------------------------------------------------------
    def synthesis(self, ws: Tensor, noise_mode: str = "random", noise: Sequence[Tensor] | None = None) -> Tensor:
        """ws (B, num_ws, w_dim) -> images at the current resolution.

        ``noise_mode``: "random" draws fresh noise, "none" leaves it out (deterministic). ``noise``
        (a list from ``make_noise``) uses that fixed noise instead and overrides the mode.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis expects ws of shape (B, {self.num_ws}, {self.w_dim}), got {list(ws.shape)}.")
        stage = self.stage_index
        x = self.const(ws.shape[0])
        previous = x
        for s in range(stage + 1):
            if s > 0:
                previous = x
                x = upsample(x)
            for i in (2 * s, 2 * s + 1):
                layer_noise = None if noise is None else noise[i].to(x.dtype)
                x = self.layers[i](x, ws[:, i], layer_noise, use_noise=noise is not None or noise_mode == "random")
        rgb = self.to_rgb[stage](x)
        if self.fading():  # the new block fades in over the previous stage's output, upsampled
            rgb = fade(upsample(self.to_rgb[stage - 1](previous)), rgb, self.alpha)
        return self.activation(rgb)

    def forward(self, z: Tensor, truncation_psi: float = 1.0, noise_mode: str = "random") -> Tensor:
        return self.synthesis(self.styles(z, truncation_psi), noise_mode)
