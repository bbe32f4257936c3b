"""Pieces shared by the networks: output activations, shape checks, weight initialisers, PacGAN packing."""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from gan_modules.nets.layers import MinibatchDiscrimination

# The value range each generator output activation produces; datasets must be scaled to match.
OUTPUT_RANGES: dict[str, tuple[float, float] | None] = {
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "identity": None,
}


@dataclass(frozen=True)
class DiscriminatorOutput:
    """What every discriminator returns for a batch: one structure, so that callers never probe
    which kind of discriminator they hold.

    Attributes:
        logits: the adversarial score per sample, ``(B,)``, raw (the losses work on logits).
        class_logits: ``(B, num_classes)`` from a discriminator with a class head (AC-GAN), else None.
        features: ``(B, feature_dim)``, the input of the last layer, where the network splits there.
    """

    logits: Tensor
    class_logits: Tensor | None = None
    features: Tensor | None = None


@contextlib.contextmanager
def eval_mode(*nets: nn.Module) -> Iterator[None]:
    """Put ``nets`` in eval mode for the block and restore each one's own mode after it, even when the
    block raises (a network left in eval mode would train on without BatchNorm updates or dropout)."""
    modes = [net.training for net in nets]
    try:
        for net in nets:
            net.eval()
        yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


def check_pack(pack: object) -> int:
    """The ``pack`` argument of a discriminator (PacGAN's m) as an int >= 1."""
    return check_size("pack (model.discriminator.pack)", pack)


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """PacGAN packing (Lin et al. 2018): ``pack`` consecutive samples become one, concatenated along
    the channels (images ``(B, C, H, W) -> (B/m, m*C, H, W)``) or the features (vectors
    ``(B, D) -> (B/m, m*D)``), so the discriminator judges the group jointly and returns B/m logits.

    The training loop calls D on real and fake batches separately, so a packed sample is all real or
    all fake, as the paper requires. ``pack=1`` returns ``x`` itself.
    """
    if pack == 1:
        return x
    if x.dim() < 2:
        raise ValueError(f"Packing needs a batch of samples (B, ...), got a tensor of shape {list(x.shape)}.")
    batch = x.shape[0]
    if batch % pack:
        raise ValueError(
            f"model.discriminator.pack={pack} does not divide the batch of {batch} samples: the discriminator "
            f"judges groups of {pack}. Set dataset.batch_size to a multiple of {pack} (and keep "
            "dataset.drop_last=true, so that the last batch is full), or change model.discriminator.pack."
        )
    # Row-major reshape: group g holds samples g*m .. g*m+m-1, channels ordered sample by sample.
    return x.reshape(batch // pack, pack * x.shape[1], *x.shape[2:])


PACK_INITS = ("per_sample", "dense")


def check_pack_init(pack_init: object) -> str:
    """The ``pack_init`` argument of a discriminator: how its packed first layer starts."""
    if pack_init not in PACK_INITS:
        raise ValueError(f"model.discriminator.pack_init={pack_init!r} is not one of {list(PACK_INITS)}: 'per_sample' "
                         "starts each unit of the packed first layer on one sample of the group, 'dense' on all of "
                         "them.")
    return str(pack_init)


@torch.no_grad()
def init_packed_input_(layer: nn.Module, pack: int) -> None:
    """Start a packed first layer (a Linear or conv whose input is ``pack_samples``' output) with each
    output unit reading one sample of its group: unit ``u`` keeps the weights on sample ``u % pack`` and
    starts at zero on the others, scaled by ``sqrt(pack)`` so that its output variance is that of the
    dense layer. All weights stay trainable, so units learn to combine samples from there.

    Why: a dense random first layer sums random projections of the ``m`` samples, and a sum of ``m``
    independent projections blurs the structure of each one (on the 2-D grid, the lattice of modes)
    into a smooth distribution, so D starts without a feature that tells real from fake and learns
    them far more slowly than unpacked. ``pack=1`` leaves the layer unchanged.
    """
    if pack == 1:
        return
    weight = layer.weight
    out_units, fan_in = weight.shape[:2]
    if fan_in % pack:
        raise ValueError(f"The packed first layer has {fan_in} inputs, not a multiple of pack={pack}.")
    if out_units < pack:
        # Too few units for one per sample: some samples would start unread, so keep it dense.
        warnings.warn(f"A packed first layer with {out_units} units cannot start one unit per sample of {pack}: "
                      "it keeps the dense init (model.discriminator.pack_init=per_sample needs at least pack units).",
                      stacklevel=2)
        return
    keep = torch.zeros(out_units, pack, dtype=weight.dtype, device=weight.device)
    keep[torch.arange(out_units), torch.arange(out_units) % pack] = math.sqrt(pack)
    # Input channels are ordered sample by sample (pack_samples), so the mask's (unit, sample) grid
    # repeats over each sample's own channels and over the kernel.
    shape = (out_units, pack, 1) + (1,) * (weight.dim() - 2)
    weight.view(out_units, pack, fan_in // pack, *weight.shape[2:]).mul_(keep.view(shape))


def make_output_activation(name: str) -> nn.Module:
    """The final generator activation by name ('tanh', 'sigmoid' or 'identity')."""
    if name not in OUTPUT_RANGES:
        raise ValueError(f"Unknown output_activation {name!r}: choose one of {sorted(OUTPUT_RANGES)}.")
    return {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}[name]()


def check_size(name: str, value: object, minimum: int = 1) -> int:
    """A size argument (z_dim, a width, a channel count) as an int; 0, 1.5 or True are refused rather
    than truncated into a network that trains but cannot work (z_dim=0 makes G a constant)."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)  # type: ignore[call-overload]


def check_sizes(name: str, values: Sequence[object]) -> list[int]:
    """Every entry of a list of sizes (the ``hidden`` widths, ``channels``) through :func:`check_size`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of integers >= 1, got {values!r}.")
    return [check_size(f"{name}[{i}]", v) for i, v in enumerate(values)]


def as_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"A sample shape must be a non-empty list of positive sizes, got {list(shape)}.")
    return shape


def image_shape(shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Check that ``shape`` is (C, H, W) with a square image, as the convolutional models need."""
    shape = as_shape(shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(
            f"{model} needs square images given as [channels, size, size], got {list(shape)}; "
            "use an MLP model (model=mlp_gan) for vector data."
        )
    return shape  # type: ignore[return-value]


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def keras_init_(module: nn.Module) -> None:
    """Keras defaults (Glorot-uniform weights, zero biases), for the seed recipes that used Keras."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al.: all weights from N(0, 0.02); BatchNorm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def make_minibatch_discrimination(in_features: int, options: Mapping[str, int] | None) -> MinibatchDiscrimination | None:
    """The ``minibatch_discrimination: {num_kernels, kernel_dim}`` option of a discriminator (None: off)."""
    if options is None:
        return None
    keys = set(options)
    if keys != {"num_kernels", "kernel_dim"}:
        raise ValueError(
            "minibatch_discrimination must be null or {num_kernels: int, kernel_dim: int} "
            f"(e.g. {{num_kernels: 100, kernel_dim: 5}}), got keys {sorted(keys)}."
        )
    return MinibatchDiscrimination(in_features, check_size("minibatch_discrimination.num_kernels", options["num_kernels"]),
                                   check_size("minibatch_discrimination.kernel_dim", options["kernel_dim"]))
