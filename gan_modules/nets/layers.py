"""Layers shared by the networks.

* Discriminator stabilisers that look across the batch (minibatch discrimination, minibatch
  standard deviation): they let D compare a sample with the other samples of its batch, so that a
  generator that collapses onto a few modes becomes easy to spot. GANModule sends real and fake
  batches through D separately, so each layer sees an all-real or an all-fake batch.
* The ProGAN / StyleGAN building blocks (Karras et al. 2018, 2019): equalized-learning-rate linear
  and conv layers, pixel-wise feature normalisation, noise injection, AdaIN, a learned constant.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, "Improved techniques for training GANs").

    For features ``x: (B, in_features)`` and a learned tensor ``T: (in_features, num_kernels,
    kernel_dim)``: ``M_i = x_i T`` is a ``(num_kernels, kernel_dim)`` matrix per sample,
    ``c_b(i, j) = exp(-||M_i,b - M_j,b||_1)`` the closeness of samples i and j under kernel b, and
    ``o(x_i)_b = sum_{j != i} c_b(i, j)``. Returns ``concat([x, o])``: ``(B, in_features + num_kernels)``.

    A batch of identical samples gives ``o = B - 1`` for every kernel; well-separated samples give
    ``o ~ 0``.
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int) -> None:
        super().__init__()
        if min(in_features, num_kernels, kernel_dim) < 1:
            raise ValueError(
                "MinibatchDiscrimination needs positive in_features, num_kernels and kernel_dim, got "
                f"{in_features}, {num_kernels}, {kernel_dim}."
            )
        self.in_features, self.num_kernels, self.kernel_dim = int(in_features), int(num_kernels), int(kernel_dim)
        self.out_features = self.in_features + self.num_kernels
        self.T = nn.Parameter(torch.empty(self.in_features, self.num_kernels, self.kernel_dim))
        # Fan-in scaling keeps the entries of M near the size of x whatever in_features is; with a
        # fixed small std, thousands of features (a flattened conv map) would put every pair of
        # samples far apart, so exp(-distance) and its gradient would start at ~0.
        nn.init.normal_(self.T, 0.0, 1.0 / math.sqrt(self.in_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MinibatchDiscrimination expects (B, {self.in_features}) features, got {list(x.shape)}.")
        m = (x @ self.T.flatten(1)).view(-1, self.num_kernels, self.kernel_dim)  # (B, K, D)
        distance = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(-1)  # (B, B, K): L1 over kernel_dim
        # c_b(i, i) = exp(0) = 1 exactly, so subtracting 1 leaves the sum over the other samples.
        o = torch.exp(-distance).sum(1) - 1.0
        return torch.cat([x, o], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}"


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN), appended as one extra feature.

    The batch is split into groups of ``group_size`` consecutive samples (the whole batch when
    ``group_size`` does not divide it). In each group: the standard deviation of every feature over
    the group's samples (population std, ``sqrt(var + eps)``), averaged over all features into one
    number, which is appended to each sample of the group as a constant extra channel:
    ``(B, C, H, W) -> (B, C + 1, H, W)``, or ``(B, F) -> (B, F + 1)`` for vectors.
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        if group_size < 1:
            raise ValueError(f"MinibatchStdDev needs group_size >= 1, got {group_size}.")
        self.group_size, self.eps = int(group_size), float(eps)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        group = self.group_size if batch % self.group_size == 0 else batch
        grouped = x.reshape(batch // group, group, *x.shape[1:])  # (groups, group, ...); any layout
        std = torch.sqrt(grouped.var(dim=1, correction=0) + self.eps)  # (groups, ...)
        per_group = std.flatten(1).mean(1)  # (groups,)
        # one value per sample, shaped as one channel of x: (B, 1, H, W) or (B, 1)
        feature = per_group.repeat_interleave(group).view(batch, *([1] * (x.dim() - 1)))
        feature = feature.expand(batch, 1, *x.shape[2:])
        return torch.cat([x, feature.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on the weight of every conv and linear layer.

    Uses ``torch.nn.utils.parametrizations.spectral_norm``: one power iteration per training forward
    estimates the top singular value, and the layer uses ``weight / sigma``. Call it after the
    weights are initialised (initialisers write ``.weight``, which becomes a computed property).
    Returns ``module`` for chaining.
    """
    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    for m in list(module.modules()):
        if isinstance(m, layers):
            nn.utils.parametrizations.spectral_norm(m)
    return module


# --- ProGAN / StyleGAN ------------------------------------------------------------------------
class EqualizedLinear(nn.Module):
    """A linear layer with an equalized learning rate (ProGAN, section 4.1).

    The stored weight is drawn from N(0, 1) and multiplied at run time by the He constant
    ``gain / sqrt(fan_in)``, so Adam's scale-free updates move every layer at the same relative
    speed. ``lr_multiplier`` scales the effective learning rate (StyleGAN's mapping network uses
    0.01): the stored weight is N(0, 1 / lr_multiplier^2) and the run-time scale is multiplied by
    it, so the effective weight starts at the He scale but each update moves it lr_multiplier as far.
    ``bias_init`` is the effective initial bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = math.sqrt(2.0),
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be positive, got {lr_multiplier}.")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.lr_multiplier = float(lr_multiplier)
        self.weight = nn.Parameter(torch.randn(self.out_features, self.in_features) / self.lr_multiplier)
        self.bias = nn.Parameter(torch.full((self.out_features,), bias_init / self.lr_multiplier)) if bias else None
        self.weight_scale = gain * self.lr_multiplier / math.sqrt(self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_multiplier
        return F.linear(x, self.weight * self.weight_scale, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, lr_multiplier={self.lr_multiplier:g}"


class EqualizedConv2d(nn.Module):
    """A conv layer with an equalized learning rate: N(0, 1) weights scaled by ``gain / sqrt(fan_in)``
    at run time, ``fan_in = in_channels * kernel_size^2``; "same" padding for odd kernels by default."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int | None = None,
                 bias: bool = True, gain: float = math.sqrt(2.0)) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.padding = self.kernel_size // 2 if padding is None else int(padding)
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self.weight_scale = gain / math.sqrt(self.in_channels * self.kernel_size**2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.weight_scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}, padding={self.padding}"


class PixelNorm(nn.Module):
    """Pixel-wise feature vector normalisation (ProGAN, section 4.2): each pixel's feature vector
    (dim 1) is scaled to unit root-mean-square, which keeps G's signal magnitudes from escalating."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class NoiseInjection(nn.Module):
    """StyleGAN's per-pixel noise: one N(0, 1) image per sample, broadcast over channels and scaled
    by a learned per-channel factor (initialised to 0, so training decides how much noise to use)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(int(channels)))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """``noise``: ``(B, 1, H, W)`` to use fixed noise; None draws fresh noise."""
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight.view(1, -1, 1, 1) * noise


class AdaIN(nn.Module):
    """Adaptive instance normalisation (StyleGAN): each channel of each sample is normalised to zero
    mean and unit variance, then scaled and shifted by the style ``A(w)``, a learned affine map of w
    (initialised so that the scale starts at 1 and the shift at 0)."""

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.channels, self.eps = int(channels), float(eps)
        self.style = EqualizedLinear(w_dim, 2 * self.channels, gain=1.0)
        with torch.no_grad():
            self.style.bias[: self.channels].fill_(1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        scale, shift = self.style(w).view(-1, 2 * self.channels, 1, 1).chunk(2, dim=1)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + self.eps)
        return x * scale + shift


class ConstantInput(nn.Module):
    """StyleGAN's learned constant: the synthesis network starts from this ``(channels, size, size)``
    tensor, the same for every sample, instead of from the latent code."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, int(channels), int(size), int(size)))

    def forward(self, batch_size: int) -> Tensor:
        return self.weight.expand(batch_size, -1, -1, -1)
