"""Layers shared by the networks: discriminator stabilisers that look across the batch.

Both layers let D compare a sample with the other samples of its batch, so that a generator that
collapses onto a few modes (a batch of near-identical fakes) becomes easy to spot. GANModule sends
real and fake batches through D separately, so each layer sees an all-real or an all-fake batch.
"""
from __future__ import annotations

import math

import torch
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
