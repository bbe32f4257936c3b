"""Loss values on hand-computed cases, and the WGAN-GP penalty."""
import math

import pytest
import torch
from torch import nn

from gan_modules.losses import LOSSES, gradient_penalty
from gan_modules.objectives import GANLoss

ZERO = torch.zeros(8)  # logit 0 everywhere: D = 1/2


def test_value_function_at_d_one_half_is_minus_log_4():
    # V(D, G) = E log D(x) + E log(1 - D(G(z))) = -(D loss) for the BCE losses.
    assert -LOSSES["minimax"].d_loss(ZERO, ZERO).item() == pytest.approx(-math.log(4))
    assert LOSSES["minimax"].g_loss(ZERO).item() == pytest.approx(math.log(0.5))
    assert LOSSES["non_saturating"].g_loss(ZERO).item() == pytest.approx(math.log(2))


def test_bce_losses_match_torch_bce_on_random_logits():
    real, fake = torch.randn(32), torch.randn(32)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(real, torch.ones(32)) + bce(fake, torch.zeros(32))
    assert LOSSES["non_saturating"].d_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert LOSSES["non_saturating"].g_loss(fake).item() == pytest.approx(bce(fake, torch.ones(32)).item(), rel=1e-6)
    # saturating minimax: G minimises log(1 - sigmoid(fake))
    expected_g = torch.log1p(-torch.sigmoid(fake)).mean()
    assert LOSSES["minimax"].g_loss(fake).item() == pytest.approx(expected_g.item(), rel=1e-5)


def test_wasserstein_hinge_lsgan_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert LOSSES["wasserstein"].d_loss(real, fake).item() == pytest.approx(-0.75 - 1.25)  # mean(f) - mean(r)
    assert LOSSES["wasserstein"].g_loss(fake).item() == pytest.approx(0.75)
    # hinge: relu(1 - r) = [0, 0.5] -> 0.25 ; relu(1 + f) = [0, 1.5] -> 0.75
    assert LOSSES["hinge"].d_loss(real, fake).item() == pytest.approx(1.0)
    # lsgan: 0.5 * mean((r-1)^2) = 0.5 * (1 + 0.25)/2 ; 0.5 * mean(f^2) = 0.5 * (4 + 0.25)/2
    assert LOSSES["lsgan"].d_loss(real, fake).item() == pytest.approx(0.3125 + 1.0625)
    assert LOSSES["lsgan"].g_loss(fake).item() == pytest.approx(0.5 * (9 + 0.25) / 2)


def test_gradient_penalty_zero_for_unit_gradient_and_uses_one_weight_per_sample():
    class Linear1(nn.Module):  # D(x) = sum(w * x) with ||w|| = 1: gradient norm 1 everywhere
        def forward(self, x):
            w = torch.full_like(x[0], 1.0 / math.sqrt(x[0].numel()))
            return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    assert gradient_penalty(Linear1(), real, fake).item() == pytest.approx(0.0, abs=1e-10)

    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach())
            return 2.0 * x.flatten(1).sum(1)  # gradient norm 2 * sqrt(9) = 6 -> penalty 25

    torch.manual_seed(0)
    assert gradient_penalty(Spy(), real, fake).item() == pytest.approx(25.0)
    x_hat = seen[0]
    # x_hat = eps * real + (1 - eps) * fake with one eps per sample: the ratio is constant per sample
    eps = (x_hat - fake) / (real - fake)
    assert torch.allclose(eps, eps[:, :1, :1, :1].expand_as(eps), atol=1e-4)
    assert not torch.allclose(eps[0], eps[1])


def test_ganloss_rejects_unknown_kind_with_the_choices():
    with pytest.raises(ValueError, match="non_saturating"):
        GANLoss(kind="wasserstien")


def test_decision_boundaries():
    def accuracies(kind, real, fake):
        stats = GANLoss(kind).discriminator_objective.output_statistics(torch.tensor(real), torch.tensor(fake))
        return stats.get("d_acc_real"), stats.get("d_acc_fake")

    assert accuracies("non_saturating", [0.1, -0.1], [0.1, -0.1]) == (0.5, 0.5)
    assert accuracies("non_saturating", [0.1, 0.2], [-0.1, -0.2]) == (1.0, 1.0)
    assert accuracies("lsgan", [0.6, 0.4], [0.6, 0.6]) == (0.5, 0.0)  # lsgan's boundary is 0.5
    assert accuracies("wasserstein", [1.0], [-1.0]) == (None, None)  # a critic score has no boundary
