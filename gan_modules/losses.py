"""Adversarial losses as pure functions, in (discriminator, generator) pairs, plus penalties.

``objectives.py`` combines them into what each training phase minimises.

Everything works on raw discriminator outputs ("logits"): BCE-style losses are written with
softplus, which is numerically stable and safe under autocast (a sigmoid in D followed by
``binary_cross_entropy`` is not). With ``D(x) = sigmoid(logit)``:

* ``-log D(x)      = softplus(-logit)``
* ``-log(1 - D(x)) = softplus(logit)``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --- minimax / non-saturating (Goodfellow et al. 2014) ------------------------------------
def bce_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """D maximises log D(x) + log(1 - D(G(z))): real labelled 1, fake labelled 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def minimax_g_loss(fake_logits: Tensor) -> Tensor:
    """The paper's saturating objective: G minimises log(1 - D(G(z)))."""
    return -F.softplus(fake_logits).mean()


def non_saturating_g_loss(fake_logits: Tensor) -> Tensor:
    """The practical objective: G minimises -log D(G(z)) (BCE of fakes against label 1)."""
    return F.softplus(-fake_logits).mean()


# --- Wasserstein (Arjovsky et al. 2017; Gulrajani et al. 2017) -----------------------------
def wasserstein_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The critic maximises E[D(x)] - E[D(G(z))]."""
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) ----------------------------------------------
def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


# --- least squares (Mao et al. 2017, the 0-1 coding) ----------------------------------------
def lsgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * ((real_logits - 1.0) ** 2).mean() + 0.5 * (fake_logits**2).mean()


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    return 0.5 * ((fake_logits - 1.0) ** 2).mean()


# --- penalties --------------------------------------------------------------------------------
# Penalties differentiate D's output with respect to its input and train through that gradient
# (create_graph). They run with autocast switched off, so the input gradient is computed in the
# input's precision (fp32 under mixed precision) rather than in fp16, and on D's unscaled output
# (a GradScaler only scales the final loss given to backward).
def _input_gradient(discriminator: nn.Module, x: Tensor) -> Tensor:
    """d(sum_i D(x_i)) / dx with the graph kept, so a penalty on it trains D."""
    x = x.detach().requires_grad_(True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad


def gradient_penalty(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] on x_hat = eps * real + (1 - eps) * fake.

    One interpolation weight per sample (not per pixel), as in Gulrajani et al.
    """
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    grad = _input_gradient(discriminator, x_hat)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E over real samples of ||grad_x D(x)||_2^2.

    The paper's regulariser is ``gamma / 2 * R1``; ``model.loss.r1_weight`` multiplies this value
    directly, so it plays the role of gamma / 2 (gamma = 10 -> r1_weight = 5).
    """
    grad = _input_gradient(discriminator, real)
    return grad.flatten(1).pow(2).sum(1).mean()


def drift_penalty(real_logits: Tensor) -> Tensor:
    """ProGAN's drift term E[D(x)^2] on real samples: keeps a Wasserstein critic's output near 0
    (the loss itself only fixes differences between outputs). The paper weights it by 0.001."""
    return real_logits.pow(2).mean()


def auxiliary_class_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """AC-GAN's class term (Odena et al. 2017): cross-entropy of D's class head against the labels,
    minimised by D (on real images) and by G (on its fakes, with the labels they were asked for)."""
    return F.cross_entropy(class_logits.float(), labels)


@dataclass(frozen=True)
class LossPair:
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    # Where D's output separates "real" from "fake"; None when the output is an unbounded critic
    # score (Wasserstein), for which an accuracy means nothing.
    decision_threshold: float | None
    # Whether sigmoid(output) is D's probability that the input is real.
    outputs_logits: bool


LOSSES: dict[str, LossPair] = {
    "minimax": LossPair(bce_d_loss, minimax_g_loss, 0.0, True),
    "non_saturating": LossPair(bce_d_loss, non_saturating_g_loss, 0.0, True),
    "wasserstein": LossPair(wasserstein_d_loss, wasserstein_g_loss, None, False),
    "hinge": LossPair(hinge_d_loss, wasserstein_g_loss, 0.0, False),
    "lsgan": LossPair(lsgan_d_loss, lsgan_g_loss, 0.5, False),
}
