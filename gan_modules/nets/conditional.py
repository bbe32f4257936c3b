"""Class-conditional wrappers around any generator or discriminator backbone (Mirza & Osindero 2014).

* ``ConditionalGenerator``: ``G(z, y) = backbone(z * embed(y))``, the label embedding has ``z_dim``
  entries and scales z coordinate-wise, so the backbone keeps its input size.
* ``ConditionalDiscriminator``: the label embedding becomes one extra ``H x W`` input channel
  (for vector data ``(D,)``: ``D`` extra entries), so the backbone is built for ``C + 1`` channels.
* ``ProjectionDiscriminator`` (Miyato & Koyama 2018): ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``
  with ``phi`` the backbone's ``features`` and ``psi`` its last layer (``logit``).
* ``AuxiliaryClassifierDiscriminator`` (AC-GAN, Odena et al. 2017): ``D(x) = psi(phi(x))`` plus a
  class head on ``phi(x)``; the loss's class term adds its cross-entropy to both players' losses.

A backbone is given either as a module or as a factory (a Hydra ``_partial_: true`` config): the
generator calls its factory with no argument, the discriminators with the ``in_shape`` they need
(one channel more for the concatenating one), so one YAML file serves every dataset shape.

PacGAN packing (``pack=m``, nets/common.py ``pack_samples``): the concatenating discriminator packs
each sample together with its own label channel (the backbone is built with ``pack=m`` for ``C + 1``
channels), so D judges m (sample, label) pairs jointly. The projection and AC-GAN discriminators
refuse ``pack > 1``: both score one sample against one label (the projection term is a per-sample
log-ratio ``<embed(y), phi(x)>``, the class head predicts one class per sample), and a packed input
has m labels and one feature vector, so neither term has a meaning there.

Conditional nets carry ``num_classes``; ``is_conditional``, ``call_generator`` and ``call_discriminator`` let
callers treat conditional and unconditional nets alike.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

from gan_modules.nets.common import DiscriminatorOutput, as_shape, check_pack, check_pack_init, numel

Backbone = Union[nn.Module, Callable[..., nn.Module]]

UNLABELLED_HELP = (
    "A conditional model needs labelled data: use a labelled dataset (dataset=digits, mnist, fashion_mnist, "
    "cifar10, toy2d_ring, toy2d_grid), or an image folder with class sub-folders and dataset.num_classes=K set, "
    "or an unconditional model (e.g. model=dcgan, model=mlp_gan)."
)


def check_num_classes(num_classes: int | None, owner: str) -> int:
    """``num_classes`` as an int >= 1, or an error that says how to get labels."""
    if num_classes is None or isinstance(num_classes, bool) or int(num_classes) < 1:
        raise ValueError(f"{owner} needs num_classes >= 1, got {num_classes!r} (dataset.num_classes). {UNLABELLED_HELP}")
    return int(num_classes)


def is_conditional(net: nn.Module) -> bool:
    """Whether ``net`` is one of this file's wrappers, called with labels (a classifier with a
    ``num_classes`` attribute is not)."""
    return getattr(net, "num_classes", None) is not None and getattr(net, "takes_labels", False)


def call_generator(generator: nn.Module, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """``G(z)`` when ``labels`` is None, else ``G(z, y)``."""
    return generator(z) if labels is None else generator(z, labels)


def call_discriminator(discriminator: nn.Module, x: Tensor, labels: Tensor | None = None) -> DiscriminatorOutput:
    """``D(x)`` when ``labels`` is None, else ``D(x, y)``."""
    return discriminator(x) if labels is None else discriminator(x, labels)


def conditioning_classes(generator: nn.Module, discriminator: nn.Module) -> int | None:
    """The class count of a conditional G and D pair, None for an unconditional pair, else an error."""
    g_classes = generator.num_classes if is_conditional(generator) else None
    d_classes = discriminator.num_classes if is_conditional(discriminator) else None
    if g_classes != d_classes:
        raise ValueError(
            f"The generator is {'conditional with %d classes' % g_classes if g_classes else 'unconditional'} but the "
            f"discriminator is {'conditional with %d classes' % d_classes if d_classes else 'unconditional'}: "
            "wrap both networks (nets/conditional.py) with the same num_classes, or neither."
        )
    return g_classes


def check_labels(labels: Tensor, num_classes: int) -> Tensor:
    """User-given labels as int64, or an error naming the valid range."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(f"Labels {bad.tolist()} are out of range: this model has {num_classes} classes, 0 to {num_classes - 1}.")
    return labels


def cycling_labels(n: int, num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """``0, 1, ..., K-1, 0, 1, ...``: every class equally often, so a grid K images wide has one class per column."""
    return torch.arange(n, device=device) % num_classes


def _build(backbone: Backbone, **kwargs: object) -> nn.Module:
    if isinstance(backbone, nn.Module):
        return backbone
    if callable(backbone):
        return backbone(**kwargs)
    raise TypeError(f"A backbone must be an nn.Module or a factory returning one, got {type(backbone).__name__}.")


def _accepts(factory: Backbone, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # not introspectable
        return False


def _build_packed(backbone: Backbone, in_shape: tuple[int, ...], pack: int, pack_init: str = "per_sample") -> nn.Module:
    """A discriminator backbone for ``in_shape`` that packs ``pack`` samples; a factory gets ``pack``
    (and ``pack_init``, where it takes one) only when ``pack`` is above 1, so backbones without the
    arguments keep working unpacked."""
    if pack == 1 or isinstance(backbone, nn.Module):
        net = _build(backbone, in_shape=list(in_shape))
    else:
        extra = {"pack_init": pack_init} if _accepts(backbone, "pack_init") else {}
        if not extra and pack_init != "per_sample":
            raise ValueError(f"model.discriminator.pack_init={pack_init!r}: this backbone has no pack_init argument, so "
                             "only the default applies; remove the setting or use a backbone that takes it.")
        try:
            net = _build(backbone, in_shape=list(in_shape), pack=pack, **extra)
        except TypeError as error:
            if "pack" not in str(error):
                raise
            raise ValueError(
                f"model.discriminator.pack={pack}: this backbone cannot pack samples ({error}); the MLP, DCGAN, "
                "seed DCGAN and ProGAN discriminators can. Use one of them, or model.discriminator.pack=1."
            ) from error
    net_pack = int(getattr(net, "pack", 1))
    if net_pack != pack:
        raise ValueError(
            f"The wrapper was given pack={pack} but its backbone packs {net_pack} samples: set pack once, "
            "on the wrapper (model.discriminator.pack), and leave the backbone's at 1."
        )
    return net


def _refuse_packing(pack: object, owner: str) -> None:
    if check_pack(pack) != 1:
        raise ValueError(
            f"{owner} cannot pack samples (model.discriminator.pack={pack}): it scores each sample against "
            "its own label, and a packed input has one feature vector for several labels. Use "
            "model.discriminator.pack=1, or the concatenating conditional discriminator (model=cgan_dcgan, "
            "model=cgan_mlp), which packs each sample with its label channel."
        )


def _build_with_features(backbone: Backbone, in_shape: tuple[int, ...], role: str) -> nn.Module:
    """A discriminator backbone split as ``forward(x) == logit(features(x))``, or a clear error."""
    net = _build(backbone, in_shape=list(in_shape))
    if int(getattr(net, "pack", 1)) != 1:
        raise ValueError(
            f"{type(net).__name__} with pack={net.pack} cannot be {role} backbone: it scores each sample "
            "against its own label, so it needs one feature vector per sample; leave the backbone's pack at 1."
        )
    if not (hasattr(net, "features") and hasattr(net, "logit") and hasattr(net, "feature_dim")):
        raise TypeError(
            f"{type(net).__name__} cannot be {role} backbone: it needs features(x) -> (B, feature_dim), "
            "feature_dim and logit(features) (MLPDiscriminator and DCGANDiscriminator have them); use "
            "ConditionalDiscriminator (conditioning: concat) instead."
        )
    return net


class ConditionalGenerator(nn.Module):
    """``G(z, y) = backbone(z * embed(y))`` with a learned ``num_classes x z_dim`` embedding.

    The embedding keeps PyTorch's N(0, 1) init: each class starts with its own random scaling of
    z's coordinates (separable from the first step), and the product of two independent unit
    Gaussians keeps unit variance, so the backbone sees inputs at the scale it was designed for.
    """

    takes_labels = True

    def __init__(self, backbone: Backbone, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "ConditionalGenerator")
        self.backbone = _build(backbone)
        self.z_dim = int(self.backbone.z_dim)
        self.out_shape = tuple(self.backbone.out_shape)
        self.output_range = self.backbone.output_range
        self.label_embedding = nn.Embedding(self.num_classes, self.z_dim)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.backbone(z * self.label_embedding(y))


class ConditionalDiscriminator(nn.Module):
    """``D(x, y) = backbone(concat(x, embed(y)))``: the label as one more input channel.

    For images ``(C, H, W)`` the embedding has ``H * W`` entries reshaped to one ``H x W`` channel
    and the backbone takes ``(C + 1, H, W)``; for vectors ``(D,)`` it has ``D`` entries and the
    backbone takes ``(2 D,)``. A factory backbone is called with that ``in_shape``.

    ``pack=m`` (PacGAN) builds the backbone with ``pack=m``: each sample is concatenated with its own
    label channel first and the backbone packs the m ``(C + 1)``-channel pairs, so every member of a
    packed group keeps its label next to it. ``pack_init`` goes to the backbone with it (a unit of the
    first layer then starts on one sample and its label channel).
    """

    takes_labels = True

    def __init__(self, backbone: Backbone, in_shape: Sequence[int], num_classes: int | None, pack: int = 1,
                 pack_init: str = "per_sample") -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, "ConditionalDiscriminator")
        self.in_shape = as_shape(in_shape)
        self.pack = check_pack(pack)
        pack_init = check_pack_init(pack_init)
        if len(self.in_shape) == 3:
            self.label_shape: tuple[int, ...] = (1, *self.in_shape[1:])
            backbone_shape = (self.in_shape[0] + 1, *self.in_shape[1:])
        else:  # vector data: one embedding entry per data entry, concatenated after flattening
            self.label_shape = (numel(self.in_shape),)
            backbone_shape = (2 * numel(self.in_shape),)
        self.backbone = _build_packed(backbone, backbone_shape, self.pack, pack_init)
        self.label_embedding = nn.Embedding(self.num_classes, numel(self.label_shape))

    def forward(self, x: Tensor, y: Tensor) -> DiscriminatorOutput:
        label_map = self.label_embedding(y).view(x.shape[0], *self.label_shape)
        if len(self.in_shape) != 3:
            x = x.flatten(1)
        return self.backbone(torch.cat([x, label_map.to(x.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """Miyato & Koyama (2018): ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>``.

    ``phi`` is ``backbone.features`` (shape ``(B, backbone.feature_dim)``) and ``psi`` is
    ``backbone.logit``, the backbone's own last layer, so the unconditional part is exactly the
    backbone and no parameter sits unused. The class embedding gets Glorot-uniform weights, as in
    the authors' code, which keeps the projection term at the scale of ``psi`` at the start;
    ``spectral_norm`` normalises it too (use it with a spectrally normalised backbone).
    """

    takes_labels = True

    def __init__(self, backbone: Backbone, in_shape: Sequence[int], num_classes: int | None,
                 spectral_norm: bool = False, pack: int = 1) -> None:
        super().__init__()
        _refuse_packing(pack, "ProjectionDiscriminator")
        self.pack = 1
        self.num_classes = check_num_classes(num_classes, "ProjectionDiscriminator")
        self.in_shape = as_shape(in_shape)
        self.backbone = _build_with_features(backbone, self.in_shape, "a projection discriminator's")
        self.label_embedding = nn.Embedding(self.num_classes, int(self.backbone.feature_dim))
        nn.init.xavier_uniform_(self.label_embedding.weight)
        if spectral_norm:
            nn.utils.parametrizations.spectral_norm(self.label_embedding)

    def forward(self, x: Tensor, y: Tensor) -> DiscriminatorOutput:
        phi = self.backbone.features(x)
        return DiscriminatorOutput(self.backbone.logit(phi) + (self.label_embedding(y) * phi).sum(dim=1), features=phi)


class AuxiliaryClassifierDiscriminator(nn.Module):
    """AC-GAN (Odena et al. 2017): an unconditional real/fake logit ``psi(phi(x))`` and a class head
    ``W phi(x)`` on the same features, both in one pass: ``forward(x, y)`` returns the logit and the
    class logits (``y`` is not used; the class term that makes it conditional is part of the
    training objective, ``losses.AuxiliaryClassTerm``).
    """

    takes_labels = True

    def __init__(self, backbone: Backbone, in_shape: Sequence[int], num_classes: int | None,
                 spectral_norm: bool = False, pack: int = 1) -> None:
        super().__init__()
        _refuse_packing(pack, "AuxiliaryClassifierDiscriminator")
        self.pack = 1
        self.num_classes = check_num_classes(num_classes, "AuxiliaryClassifierDiscriminator")
        self.in_shape = as_shape(in_shape)
        self.backbone = _build_with_features(backbone, self.in_shape, "an auxiliary classifier discriminator's")
        self.class_head = nn.Linear(int(self.backbone.feature_dim), self.num_classes)
        if spectral_norm:
            nn.utils.parametrizations.spectral_norm(self.class_head)

    def forward(self, x: Tensor, y: Tensor | None = None) -> DiscriminatorOutput:
        phi = self.backbone.features(x)
        return DiscriminatorOutput(self.backbone.logit(phi), class_logits=self.class_head(phi), features=phi)
