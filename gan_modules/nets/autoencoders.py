"""Autoencoder networks (plain ``nn.Module``s): stacked (optionally tied), convolutional, variational.

Every autoencoder has ``encoder`` (x -> codings, reusable for a downstream classifier), ``decode``
and ``forward(x) -> reconstruction``; the VAE's ``forward`` also returns the Gaussian's mean and
log-variance, and its ``decoder`` is a generator (``z_dim``, ``out_shape``, ``output_range``) that
``generate.py`` and ``evaluate.py`` sample from the prior.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_modules.nets.common import (
    OUTPUT_RANGES,
    as_shape,
    check_size,
    check_sizes,
    image_shape,
    make_output_activation,
    numel,
)
from gan_modules.nets.mlp import _activation

CORRUPTIONS = ("none", "gaussian", "dropout")


class InputCorruption(nn.Module):
    """Denoising autoencoders corrupt their input during training only (identity in eval mode).

    ``gaussian`` adds N(0, amount^2) noise; ``dropout`` zeroes each pixel with probability ``amount``
    (scaling the rest, as Keras' Dropout does).
    """

    def __init__(self, kind: str = "none", amount: float = 0.0) -> None:
        super().__init__()
        if kind not in CORRUPTIONS:
            raise ValueError(f"Unknown corruption {kind!r}: choose one of {list(CORRUPTIONS)}.")
        if kind != "none" and not (0.0 < amount and (kind == "gaussian" or amount < 1.0)):
            raise ValueError(f"corruption_amount must be > 0 (and < 1 for dropout), got {amount}.")
        self.kind, self.amount = kind, float(amount)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.kind == "none":
            return x
        if self.kind == "gaussian":
            return x + self.amount * torch.randn_like(x)
        return F.dropout(x, self.amount, training=True)


class TiedLinear(nn.Module):
    """A decoder layer that reuses an encoder layer's weight transposed, with a bias of its own."""

    def __init__(self, encoder_layer: nn.Linear) -> None:
        super().__init__()
        # A plain attribute list keeps the encoder's parameter out of this module's parameters, so
        # it is registered (and optimised, and saved) exactly once, under the encoder.
        self._source = [encoder_layer]
        self.bias = nn.Parameter(torch.zeros(encoder_layer.in_features))

    @property
    def weight(self) -> Tensor:
        return self._source[0].weight.t()

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self._source[0].weight.t(), self.bias)


class StackedEncoder(nn.Module):
    """flatten -> (Linear + activation) per width: the encoder half, reusable on its own."""

    def __init__(self, widths: Sequence[int], activation: str) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.activation = _activation(activation, 0.2)
        self.out_features = int(widths[-1])

    def layer(self, i: int, h: Tensor) -> Tensor:
        return self.activation(self.linears[i](h))

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for i in range(len(self.linears)):
            h = self.layer(i, h)
        return h


class StackedAutoencoder(nn.Module):
    """x -> flatten -> Linear+act per ``hidden`` width -> codings -> mirrored layers -> output activation.

    ``hidden=[100, 30]`` on 28x28 images is the 784-100-30-100-784 autoencoder. With ``tied`` each
    decoder layer uses the transposed weight of its mirror encoder layer (half the weights).
    Encoder layer ``i`` maps width ``i`` to ``i + 1``; decoder layer ``i`` maps it back.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        hidden: Sequence[int] = (100, 30),
        activation: str = "selu",
        output_activation: str = "sigmoid",
        tied: bool = False,
        corruption: str = "none",
        corruption_amount: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("model.network.hidden needs at least one width (the codings size is the last).")
        self.in_shape = as_shape(in_shape)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        self.tied = bool(tied)
        widths = [numel(self.in_shape), *check_sizes("model.network.hidden", hidden)]
        self.corrupt = InputCorruption(corruption, corruption_amount)
        self.encoder = StackedEncoder(widths, activation)
        self.decoder_linears = nn.ModuleList(
            TiedLinear(enc) if self.tied else nn.Linear(enc.out_features, enc.in_features)
            for enc in self.encoder.linears
        )
        self.output_activation = make_output_activation(output_activation)

    @property
    def num_layers(self) -> int:
        return len(self.decoder_linears)

    def decode_layer(self, i: int, h: Tensor) -> Tensor:
        out = self.decoder_linears[i](h)
        return self.output_activation(out) if i == 0 else self.encoder.activation(out)

    def decode(self, codings: Tensor) -> Tensor:
        h = codings
        for i in reversed(range(self.num_layers)):
            h = self.decode_layer(i, h)
        return h.view(codings.shape[0], *self.in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encoder(self.corrupt(x)))


def _transposed_output_size(target: int) -> tuple[int, int]:
    """(padding, output_padding) for a 3x3 stride-2 transposed conv that doubles a floor-halved size."""
    # in = target // 2; out = 2*in - 2*p + 1 + op: even targets need p=1, op=1, odd ones p=0, op=0.
    return (1, 1) if target % 2 == 0 else (0, 0)


class ConvAutoencoder(nn.Module):
    """(conv 3x3 + activation + 2x2 max-pool) per ``channels``, mirrored by stride-2 transposed convs.

    On 28x28 images with channels [16, 32, 64] the codings are 64 x 3 x 3, as in seed 004's
    convolutional autoencoder; any size down to ``2**len(channels)`` pixels works.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64),
        activation: str = "selu",
        output_activation: str = "sigmoid",
        corruption: str = "none",
        corruption_amount: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_shape = image_shape(in_shape, "ConvAutoencoder")
        if self.in_shape[1] < 2 ** len(channels):
            raise ValueError(
                f"ConvAutoencoder halves the image {len(channels)} times, so it needs at least "
                f"{2 ** len(channels)} pixels; got {self.in_shape[1]}. Use fewer model.network.channels."
            )
        self.output_range = OUTPUT_RANGES.get(output_activation)
        self.corrupt = InputCorruption(corruption, corruption_amount)
        sizes = [self.in_shape[1]]
        for _ in channels:
            sizes.append(sizes[-1] // 2)
        widths = [self.in_shape[0], *check_sizes("model.network.channels", channels)]
        encoder: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            encoder += [nn.Conv2d(a, b, 3, padding=1), _activation(activation, 0.2), nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = []
        for i in reversed(range(len(channels))):
            padding, output_padding = _transposed_output_size(sizes[i])
            decoder.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 3, stride=2, padding=padding,
                                              output_padding=output_padding))
            decoder.append(make_output_activation(output_activation) if i == 0 else _activation(activation, 0.2))
        self.decoder = nn.Sequential(*decoder)

    def decode(self, codings: Tensor) -> Tensor:
        return self.decoder(codings)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encoder(self.corrupt(x)))


class VAEDecoder(nn.Module):
    """z -> MLP -> image: the VAE's generative half, with the generator interface of the GAN nets."""

    def __init__(self, z_dim: int, hidden: Sequence[int], out_shape: Sequence[int], activation: str,
                 output_activation: str) -> None:
        super().__init__()
        self.z_dim, self.out_shape = int(z_dim), as_shape(out_shape)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        layers: list[nn.Module] = []
        width = self.z_dim
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _activation(activation, 0.2)]
            width = int(h)
        layers += [nn.Linear(width, numel(self.out_shape)), make_output_activation(output_activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class VAEEncoder(nn.Module):
    """x -> MLP -> (mean, log-variance) of a diagonal Gaussian over the codings."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], z_dim: int, activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = numel(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _activation(activation, 0.2)]
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(width, z_dim)
        self.log_var = nn.Linear(width, z_dim)
        self.out_features = z_dim

    def forward(self, x: Tensor) -> Tensor:
        """The codings used downstream: the posterior mean (deterministic)."""
        return self.mean(self.body(x))

    def distribution(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mean(h), self.log_var(h)


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) with MLP encoder and decoder.

    Defaults follow seed 004: 784-150-100 SELU encoder, 10 codings, mirrored decoder, sigmoid output.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        hidden: Sequence[int] = (150, 100),
        z_dim: int = 10,
        activation: str = "selu",
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.in_shape = as_shape(in_shape)
        self.z_dim = check_size("z_dim", z_dim)
        hidden = check_sizes("hidden", hidden)
        self.encoder = VAEEncoder(self.in_shape, hidden, self.z_dim, activation)
        self.decoder = VAEDecoder(self.z_dim, list(reversed(list(hidden))), self.in_shape, activation, output_activation)
        self.output_range = self.decoder.output_range

    def decode(self, codings: Tensor) -> Tensor:
        return self.decoder(codings)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mean, log_var); in training the codings are sampled (reparameterised)."""
        mean, log_var = self.encoder.distribution(x)
        codings = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if self.training else mean
        return self.decoder(codings), mean, log_var
