"""What each phase of GAN training minimises: one objective object per phase, built from the loss config.

``GANLoss`` (the ``conf/loss`` files) holds two of them:

* ``discriminator_objective(D, real, fake, labels, step) -> (total, stats)``: the adversarial loss of
  D on a real and a fake batch plus D's regularisers;
* ``generator_objective(G, D, z, labels, step) -> (total, stats)``: G's adversarial loss on fresh
  fakes plus G's regularisers.

``GANModule`` only optimises what they return (zero_grad, backward, clip, step). Each regulariser is
a small ``Term`` with a weight and an interval: a term applied every k steps is multiplied by k, so
that on average it weighs what it would weigh every step (lazy regularisation, Karras et al. 2020).
The losses themselves stay pure functions in ``losses.py``.

Add a regulariser by writing a ``Term`` subclass (``value`` and, if it needs them, ``statistics``
and ``applies``) and listing it under ``model.loss.terms`` in the config; README "Your own loss or
regulariser" has an example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from gan_modules.augment import Augmentation
from gan_modules.losses import LOSSES, auxiliary_class_loss, drift_penalty, gradient_penalty, r1_penalty
from gan_modules.nets.common import DiscriminatorOutput
from gan_modules.nets.conditional import call_discriminator, call_generator

PHASES = ("discriminator", "generator")


@dataclass(frozen=True)
class Pass:
    """One phase's forward pass, everything a term may read.

    In the discriminator phase ``real``/``real_out`` are set and ``fake`` is the (detached) fake
    batch D judged; in the generator phase ``real`` and ``real_out`` are None and ``fake`` carries
    G's graph.
    """

    discriminator: nn.Module
    fake: Tensor
    fake_out: DiscriminatorOutput
    labels: Tensor | None = None
    real: Tensor | None = None
    real_out: DiscriminatorOutput | None = None
    augment: Augmentation | None = None
    # The generator phase's generator and noise, for terms that run G again (path length).
    generator: nn.Module | None = None
    z: Tensor | None = None

    def critic(self, x: Tensor) -> Tensor:
        """D's logits as a function of its input alone (labels bound, augmentation applied), for the
        input-gradient penalties: they differentiate through the augmentation to the clean input."""
        return judge(self.discriminator, x, self.labels, self.augment).logits


def judge(discriminator: nn.Module, x: Tensor, labels: Tensor | None, augment: Augmentation | None) -> DiscriminatorOutput:
    """D's output on ``x`` as the objective shows it to D: augmented first when there is an augmentation."""
    return call_discriminator(discriminator, x if augment is None else augment(x), labels)


class Term(nn.Module):
    """A weighted regulariser of one phase (a module, so that state such as a running mean is kept in
    buffers and saved in checkpoints).

    Args:
        weight: multiplies ``value``; a term of weight 0 is not built (``GANLoss`` leaves it out).
        interval: apply the term every this many steps of its phase (1: every step), multiplied by
            ``interval`` then (lazy regularisation).

    Subclasses set ``phase`` ("discriminator" or "generator") and ``name`` (its statistic) and
    implement ``value``.
    """

    phase: str = "discriminator"
    name: str = "term"
    # Whether the term differentiates D with respect to its input (a BatchNorm in D then makes the
    # penalty read the batch: build.validate_setup warns).
    uses_input_gradient: bool = False
    # Whether the term's loss holds a gradient (create_graph), so training differentiates twice:
    # torch.compile cannot (GANModule refuses model.compile with such a term).
    differentiates_twice: bool = False

    def __init__(self, weight: float, interval: int = 1) -> None:
        super().__init__()
        if isinstance(weight, bool) or not float(weight) >= 0:
            raise ValueError(f"{type(self).__name__}: the weight must be a number >= 0, got {weight!r}.")
        if isinstance(interval, bool) or not hasattr(interval, "__index__") or int(interval) < 1:
            raise ValueError(f"{type(self).__name__}: the interval must be an integer >= 1 (1: every step), "
                             f"got {interval!r}.")
        if self.phase not in PHASES:
            raise ValueError(f"{type(self).__name__}.phase must be one of {PHASES}, got {self.phase!r}.")
        self.weight, self.interval = float(weight), int(interval)
        self._last: dict[str, Tensor] = {}

    def applies(self, p: Pass) -> bool:
        """Whether the term means anything for this pass (e.g. a class term needs a class head)."""
        return True

    def value(self, p: Pass) -> Tensor:
        """The unweighted term, a scalar with a graph to the phase's network."""
        raise NotImplementedError

    def statistics(self, p: Pass, value: Tensor) -> dict[str, Tensor]:
        """What the term reports when it is applied (detached)."""
        return {self.name: value.detach()}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, interval={self.interval}"


class GradientPenalty(Term):
    """WGAN-GP's penalty on interpolates between real and fake (``losses.gradient_penalty``)."""

    name, uses_input_gradient, differentiates_twice = "gradient_penalty", True, True

    def value(self, p: Pass) -> Tensor:
        return gradient_penalty(p.critic, p.real, p.fake)


class R1Penalty(Term):
    """R1 on real data (``losses.r1_penalty``); the weight is gamma / 2 in Mescheder et al.'s notation."""

    name, uses_input_gradient, differentiates_twice = "r1_penalty", True, True

    def value(self, p: Pass) -> Tensor:
        return r1_penalty(p.critic, p.real)


class DriftPenalty(Term):
    """ProGAN's drift term E[D(x)^2] on real data."""

    name = "drift_penalty"

    def value(self, p: Pass) -> Tensor:
        return drift_penalty(p.real_out.logits)


class DiscriminatorClassTerm(Term):
    """AC-GAN's class cross-entropy for D: on real images, and on the fakes too with ``classify_fakes``
    (Odena et al. do; without it the class head cannot learn G's artefacts as class cues)."""

    name = "d_class_loss"

    def __init__(self, weight: float, classify_fakes: bool = False, interval: int = 1) -> None:
        super().__init__(weight, interval)
        self.classify_fakes = bool(classify_fakes)

    def applies(self, p: Pass) -> bool:
        return p.real_out.class_logits is not None

    def value(self, p: Pass) -> Tensor:
        loss = auxiliary_class_loss(p.real_out.class_logits, p.labels)
        if self.classify_fakes:
            loss = loss + auxiliary_class_loss(p.fake_out.class_logits, p.labels)
        return loss

    def statistics(self, p: Pass, value: Tensor) -> dict[str, Tensor]:
        accuracy = (p.real_out.class_logits.detach().argmax(1) == p.labels).float().mean()
        return {self.name: value.detach(), "d_class_acc_real": accuracy}


class GeneratorClassTerm(Term):
    """AC-GAN's class cross-entropy for G: D's class head should recognise each fake as the class it
    was asked for."""

    phase, name = "generator", "g_class_loss"

    def applies(self, p: Pass) -> bool:
        return p.fake_out.class_logits is not None

    def value(self, p: Pass) -> Tensor:
        return auxiliary_class_loss(p.fake_out.class_logits, p.labels)


class PathLengthPenalty(Term):
    """StyleGAN2's path-length regulariser for G: a fixed-size step in w should move the image by a
    fixed amount, whatever the w.

    For a batch of w (``batch_shrink`` times smaller than the training batch, as in the paper), the
    length ``|J_w^T y|`` with ``y`` image-sized noise scaled by ``1 / sqrt(H W)`` is pulled towards its
    running mean (exponential decay ``decay``; the mean is a buffer, saved in checkpoints). Needs an
    unconditional style-based generator (``map``, ``broadcast``, ``synthesis``: model=stylegan2, stylegan).
    """

    phase, name, differentiates_twice = "generator", "path_length_penalty", True

    def __init__(self, weight: float, interval: int = 4, decay: float = 0.01, batch_shrink: int = 2) -> None:
        super().__init__(weight, interval)
        if not 0.0 < float(decay) <= 1.0:
            raise ValueError(f"model.loss.pl_decay must be in (0, 1], got {decay}.")
        if isinstance(batch_shrink, bool) or int(batch_shrink) < 1:
            raise ValueError(f"model.loss.pl_batch_shrink must be an integer >= 1, got {batch_shrink!r}.")
        self.decay, self.batch_shrink = float(decay), int(batch_shrink)
        self.register_buffer("mean", torch.zeros(()))

    def value(self, p: Pass) -> Tensor:
        generator = p.generator
        if not all(hasattr(generator, name) for name in ("map", "broadcast", "synthesis")):
            raise ValueError(f"model.loss.pl_weight > 0 needs an unconditional style-based generator (model=stylegan2 "
                             f"or stylegan), not {type(generator).__name__}: set model.loss.pl_weight=0.")
        z = p.z[: max(1, p.z.shape[0] // self.batch_shrink)]
        ws = generator.broadcast(generator.map(z))
        images = generator.synthesis(ws)
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grad.float().square().sum(2).mean(1).sqrt()
        with torch.no_grad():
            self.mean.copy_(self.mean.lerp(lengths.mean(), self.decay))
        return (lengths - self.mean).square().mean()

    def statistics(self, p: Pass, value: Tensor) -> dict[str, Tensor]:
        return {self.name: value.detach(), "path_length_mean": self.mean.clone()}


def add_terms(total: Tensor, terms: Sequence[Term], p: Pass, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """``total`` plus every term due at ``step``, with their statistics.

    A lazy term reports its latest value on the steps it skips, so that every step has the same
    statistics (the plots and loggers expect that); the latest value is saved in checkpoints. Only a
    run resumed from a checkpoint without it evaluates the term once for the statistic alone.
    """
    stats: dict[str, Tensor] = {}
    for term in terms:
        if not term.applies(p):
            continue
        if step % term.interval == 0:
            value = term.value(p)
            total = total + term.weight * term.interval * value
            term._last = term.statistics(p, value)
        elif not term._last:
            term._last = term.statistics(p, term.value(p).detach())
        stats.update(term._last)
    return total, stats


class DiscriminatorObjective:
    """D's adversarial loss on a real and a fake batch, plus its terms, plus what D says about both."""

    def __init__(self, kind: str, terms: Sequence[Term], augment: Augmentation | None = None) -> None:
        self.pair = LOSSES[kind]
        self.terms, self.augment = terms, augment

    def __call__(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None,
                 step: int) -> tuple[Tensor, dict[str, Tensor]]:
        # Real and fake go through D separately: one mixed batch would let BatchNorm in D tell them
        # apart from the batch statistics alone.
        real_out = judge(discriminator, real, labels, self.augment)
        fake_out = judge(discriminator, fake, labels, self.augment)
        d_loss = self.pair.d_loss(real_out.logits, fake_out.logits)
        p = Pass(discriminator, fake, fake_out, labels, real, real_out, self.augment)
        total, stats = add_terms(d_loss, self.terms, p, step)
        stats.update(self.output_statistics(real_out.logits.detach(), fake_out.logits.detach()))
        if self.augment is not None:
            self.augment.observe(real_out.logits.detach(), step)
            stats.update(self.augment.statistics())
        stats["d_loss"] = d_loss.detach()
        return total, stats

    def output_statistics(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """Mean D output on real and fake (a probability for BCE losses, the raw score otherwise) and,
        where the loss has a decision boundary, D's accuracy on each."""
        to_output = torch.sigmoid if self.pair.outputs_logits else (lambda t: t)
        stats = {"d_real": to_output(real_logits).mean(), "d_fake": to_output(fake_logits).mean()}
        threshold = self.pair.decision_threshold
        if threshold is not None:
            stats["d_acc_real"] = (real_logits.flatten() > threshold).float().mean()
            stats["d_acc_fake"] = (~(fake_logits.flatten() > threshold)).float().mean()
        return stats


class GeneratorObjective:
    """G's adversarial loss on fresh fakes, plus its terms."""

    def __init__(self, kind: str, terms: Sequence[Term], augment: Augmentation | None = None) -> None:
        self.pair = LOSSES[kind]
        self.terms, self.augment = terms, augment

    def __call__(self, generator: nn.Module, discriminator: nn.Module, z: Tensor, labels: Tensor | None,
                 step: int) -> tuple[Tensor, dict[str, Tensor]]:
        fake = call_generator(generator, z, labels)
        fake_out = judge(discriminator, fake, labels, self.augment)
        g_loss = self.pair.g_loss(fake_out.logits)
        p = Pass(discriminator, fake, fake_out, labels, augment=self.augment, generator=generator, z=z)
        total, stats = add_terms(g_loss, self.terms, p, step)
        return total, {"g_loss": g_loss.detach(), **stats}


class GANLoss(nn.Module):
    """One adversarial loss with its regularisers, built from a ``conf/loss`` config: the two phase
    objectives and the weight clip that ``GANModule`` applies after each D step. A module, so that
    the state of its terms and augmentation (buffers) is saved in checkpoints.

    Args:
        kind: one of ``losses.LOSSES`` (minimax, non_saturating, wasserstein, hinge, lsgan).
        gp_weight: weight of the WGAN-GP gradient penalty (0 disables it).
        clip_value: clip every D weight to [-c, c] after each D step (original WGAN); None disables.
        r1_weight: weight of the R1 penalty on real data, ``r1_weight * r1_penalty`` (0 disables it);
            this is gamma / 2 in Mescheder et al.'s notation. Works with any ``kind``.
        r1_interval: apply R1 every this many D steps, multiplied by the interval (StyleGAN2: 16).
        drift_weight: weight of ProGAN's drift term on D's real outputs (0 disables it; the paper: 0.001).
        class_weight: weight of the class cross-entropy for a discriminator with a class head (AC-GAN),
            for both players; unused with other discriminators.
        classify_fakes: train that class head on fakes too (D's class term).
        pl_weight: weight of StyleGAN2's path-length regulariser for G (0 disables it; the paper: 2).
        pl_interval: apply it every this many G steps, multiplied by the interval (the paper: 4).
        pl_decay: decay of its running mean of path lengths (the paper: 0.01).
        pl_batch_shrink: its batch is the training batch divided by this (the paper: 2).
        terms: further ``Term`` objects, each for the phase it names.
        augment: what D's inputs go through first (``augment`` group, ``gan_modules.augment``); None: nothing.
    """

    def __init__(
        self,
        kind: str = "non_saturating",
        gp_weight: float = 0.0,
        clip_value: float | None = None,
        r1_weight: float = 0.0,
        r1_interval: int = 1,
        drift_weight: float = 0.0,
        class_weight: float = 1.0,
        classify_fakes: bool = False,
        pl_weight: float = 0.0,
        pl_interval: int = 4,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        terms: Sequence[Term] = (),
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"Unknown loss kind {kind!r}: choose one of {sorted(LOSSES)} (config key model.loss.kind).")
        for key, value in (("gp_weight", gp_weight), ("r1_weight", r1_weight), ("drift_weight", drift_weight),
                           ("pl_weight", pl_weight)):
            if value < 0:
                raise ValueError(f"model.loss.{key} must be >= 0, got {value}.")
        if not class_weight > 0:
            raise ValueError(f"model.loss.class_weight must be > 0, got {class_weight} (the class term is what "
                             "conditions an AC-GAN; for no class term use another model).")
        if clip_value is not None and clip_value <= 0:
            raise ValueError(f"model.loss.clip_value must be positive or null, got {clip_value}.")
        for term in terms:
            if not isinstance(term, Term):
                raise TypeError(f"model.loss.terms takes Term objects (gan_modules.objectives.Term), got {type(term).__name__}.")
        if augment is not None and not isinstance(augment, Augmentation):
            raise TypeError(f"model.loss.augment takes an Augmentation (gan_modules.augment), got {type(augment).__name__}.")
        self.kind = kind
        self.gp_weight, self.r1_weight, self.drift_weight = float(gp_weight), float(r1_weight), float(drift_weight)
        self.clip_value = clip_value
        self.class_weight, self.classify_fakes = float(class_weight), bool(classify_fakes)
        # The order of the terms is the order of the sum, kept as it was before the terms existed.
        d_terms: list[Term] = [DiscriminatorClassTerm(class_weight, classify_fakes)]
        if gp_weight > 0:
            d_terms.append(GradientPenalty(gp_weight))
        if r1_weight > 0:
            d_terms.append(R1Penalty(r1_weight, r1_interval))
        if drift_weight > 0:
            d_terms.append(DriftPenalty(drift_weight))
        g_terms: list[Term] = [GeneratorClassTerm(class_weight)]
        if pl_weight > 0:
            g_terms.append(PathLengthPenalty(pl_weight, pl_interval, pl_decay, pl_batch_shrink))
        d_terms += [t for t in terms if t.phase == "discriminator"]
        g_terms += [t for t in terms if t.phase == "generator"]
        self.augment = augment
        self.d_terms, self.g_terms = nn.ModuleList(d_terms), nn.ModuleList(g_terms)
        self.discriminator_objective = DiscriminatorObjective(kind, self.d_terms, augment)
        self.generator_objective = GeneratorObjective(kind, self.g_terms, augment)

    @property
    def uses_input_gradient(self) -> bool:
        """Whether a term differentiates D with respect to its input (GP, R1)."""
        return any(t.uses_input_gradient for t in [*self.d_terms, *self.g_terms])

    @property
    def differentiates_twice(self) -> bool:
        """Whether a term's loss holds a gradient (GP, R1, path length), so training needs double backward."""
        return any(t.differentiates_twice for t in [*self.d_terms, *self.g_terms])

    # The terms' latest statistics travel in checkpoints (GANModule.on_save_checkpoint), so that a run
    # resumed between two applications of a lazy term reports them without evaluating it off schedule.
    def latest_statistics(self) -> dict[str, dict[str, Tensor]]:
        return {name: {k: v.detach().cpu() for k, v in term._last.items()}
                for name, term in self.named_modules() if isinstance(term, Term) and term._last}

    def restore_statistics(self, saved: dict[str, dict[str, Tensor]]) -> None:
        terms = {name: term for name, term in self.named_modules() if isinstance(term, Term)}
        for name, statistics in saved.items():
            if name in terms:
                terms[name]._last = dict(statistics)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, clip_value={self.clip_value}"
