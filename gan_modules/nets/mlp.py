"""Fully connected generator and discriminator (the textbook GAN and the seed MLP recipes)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from gan_modules.nets.layers import MinibatchStdDev, apply_spectral_norm
from gan_modules.nets.common import (
    DiscriminatorOutput,
    OUTPUT_RANGES,
    as_shape,
    check_size,
    check_pack,
    check_pack_init,
    check_sizes,
    keras_init_,
    make_output_activation,
    make_minibatch_discrimination,
    numel,
    init_packed_input_,
    pack_samples,
)

ACTIVATIONS = ("relu", "leaky_relu", "selu", "tanh")
LATENTS = ("normal", "uniform")


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}: choose one of {list(ACTIVATIONS)}.")
    return {"relu": nn.ReLU, "selu": nn.SELU, "tanh": nn.Tanh}[name]()


def _check_init(init: str) -> None:
    if init not in ("torch", "keras"):
        raise ValueError(f"Unknown init {init!r}: choose 'torch' (PyTorch defaults) or 'keras' (Glorot-uniform).")


def normal_to_uniform(z: Tensor) -> Tensor:
    """N(0, 1) entries -> U(-sqrt 3, sqrt 3) (mean 0, variance 1) through the normal CDF."""
    return torch.erf(z / math.sqrt(2.0)) * math.sqrt(3.0)


class MLPGenerator(nn.Module):
    """z -> [Linear (-> BatchNorm1d) -> activation] x len(hidden) -> Linear -> output activation.

    ``latent="uniform"`` first maps the N(0, I) noise every caller draws through the normal CDF, so
    the layers see a uniform latent of unit variance. Intervals of equal probability are then equally
    wide: under a normal latent the ones near 0 are the narrowest, and on the 2-D grid the line of modes
    they map to is the one G most often drops (benchmarks/RESULTS.md, "PacGAN packing"). In the
    conditional wrapper the map applies to the backbone's input, ``z * embed(y)``.
    """

    def __init__(
        self,
        out_shape: Sequence[int],
        z_dim: int = 100,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        negative_slope: float = 0.2,
        batch_norm: bool = False,
        output_activation: str = "tanh",
        init: str = "torch",
        latent: str = "normal",
    ) -> None:
        super().__init__()
        _check_init(init)
        if latent not in LATENTS:
            raise ValueError(f"Unknown latent {latent!r} (model.generator.latent): choose 'normal' (the noise as "
                             "drawn) or 'uniform' (mapped through the normal CDF to a uniform latent).")
        self.latent = latent
        self.z_dim = check_size("z_dim", z_dim)
        hidden = check_sizes("hidden", hidden)
        self.out_shape = as_shape(out_shape)
        self.output_range = OUTPUT_RANGES.get(output_activation)
        layers: list[nn.Module] = []
        width = self.z_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(_activation(activation, negative_slope))
            width = h
        layers += [nn.Linear(width, numel(self.out_shape)), make_output_activation(output_activation)]
        self.net = nn.Sequential(*layers)
        if init == "keras":
            keras_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        if self.latent == "uniform":
            z = normal_to_uniform(z)
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """x -> flatten -> [Linear -> activation (-> Dropout)] x len(hidden) -> Linear -> one logit.

    Stabilisers, all off by default: ``minibatch_stddev`` appends the ProGAN minibatch standard
    deviation and then ``minibatch_discrimination`` (``{num_kernels, kernel_dim}``) appends
    Salimans et al.'s closeness features, both just before the final Linear; ``spectral_norm``
    normalises every Linear. ``pack`` (PacGAN's m) judges m samples at once, their features
    concatenated: the first Linear takes m times the sample size and D returns B/m logits.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        hidden: Sequence[int] = (128,),
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        init: str = "torch",
        minibatch_discrimination: Mapping[str, int] | None = None,
        minibatch_stddev: bool = False,
        spectral_norm: bool = False,
        pack: int = 1,
        pack_init: str = "per_sample",
    ) -> None:
        super().__init__()
        _check_init(init)
        self.in_shape = as_shape(in_shape)
        self.pack = check_pack(pack)
        pack_init = check_pack_init(pack_init)
        hidden = check_sizes("hidden", hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.pack * numel(self.in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation, negative_slope)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if minibatch_stddev:
            layers.append(MinibatchStdDev())
            width += 1
        mbd = make_minibatch_discrimination(width, minibatch_discrimination)
        if mbd is not None:
            layers.append(mbd)
            width = mbd.out_features
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        if init == "keras":
            keras_init_(self)
        if pack_init == "per_sample" and hidden:  # without hidden layers the first Linear is the output
            init_packed_input_(self.net[1], self.pack)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = self.features(x)
        return DiscriminatorOutput(self.logit(features), features=features)

    # For the conditional wrappers (nets/conditional.py), which build on the same split.
    @property
    def feature_dim(self) -> int:
        return int(self.net[-1].in_features)

    def features(self, x: Tensor) -> Tensor:
        """Everything before the last Linear: ``(B / pack, feature_dim)``."""
        return self.net[:-1](pack_samples(x, self.pack))

    def logit(self, features: Tensor) -> Tensor:
        return self.net[-1](features).view(-1)
