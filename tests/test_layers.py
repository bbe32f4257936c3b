"""Stabiliser layers: shapes, gradients, the properties that make them useful, and the D options."""
import pytest
import torch
from torch import nn

from gan_modules.nets.layers import MinibatchDiscrimination, MinibatchStdDev, apply_spectral_norm
from gan_modules.nets.dcgan import DCGANDiscriminator
from gan_modules.nets.dcgan_seed import SeedDCGANDiscriminator
from gan_modules.nets.mlp import MLPDiscriminator

MBD = {"num_kernels": 6, "kernel_dim": 3}


# --- minibatch discrimination ---------------------------------------------------------------
def test_minibatch_discrimination_shape_and_gradients():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(10, num_kernels=6, kernel_dim=3)
    x = torch.randn(5, 10, requires_grad=True)
    out = layer(x)
    assert out.shape == (5, 16)
    assert torch.equal(out[:, :10], x)  # the input passes through unchanged
    out[:, 10:].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert layer.T.grad is not None and layer.T.grad.abs().sum() > 0


def test_minibatch_discrimination_sees_identical_samples():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(10, num_kernels=6, kernel_dim=3)
    batch = 8
    same = layer(torch.randn(1, 10).expand(batch, 10))[:, 10:]
    # every other sample is at distance 0 under every kernel: o = B - 1 (self excluded)
    torch.testing.assert_close(same, torch.full((batch, 6), batch - 1.0))
    different = layer(torch.randn(batch, 10) * 20)[:, 10:]
    assert different.max() < 0.1 * (batch - 1)


def test_minibatch_discrimination_excludes_only_self():
    layer = MinibatchDiscrimination(2, num_kernels=1, kernel_dim=1)
    with torch.no_grad():
        layer.T.fill_(1.0)  # M_i = x_i1 + x_i2
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # M = 0, 1, 3
    o = layer(x)[:, 2]
    e = torch.exp
    expected = torch.stack([e(torch.tensor(-1.0)) + e(torch.tensor(-3.0)),
                            e(torch.tensor(-1.0)) + e(torch.tensor(-2.0)),
                            e(torch.tensor(-3.0)) + e(torch.tensor(-2.0))])
    torch.testing.assert_close(o, expected)


# --- minibatch standard deviation -------------------------------------------------------------
def test_minibatch_stddev_image_channel_equals_group_std():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, requires_grad=True)
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (8, 4, 5, 5)
    assert torch.equal(out[:, :3], x)
    for g, rows in enumerate((slice(0, 4), slice(4, 8))):
        expected = x[rows].detach().std(dim=0, unbiased=False).mean()  # population std, averaged
        # constant over the whole map, and the same for each sample of the group
        torch.testing.assert_close(out[rows, 3].detach(), expected.expand(4, 5, 5), rtol=1e-5, atol=1e-6)
    out[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_minibatch_stddev_vectors_and_fallback_to_whole_batch():
    torch.manual_seed(0)
    x = torch.randn(6, 7)  # 4 does not divide 6: one group of the whole batch
    out = MinibatchStdDev(group_size=4)(x)
    assert out.shape == (6, 8)
    torch.testing.assert_close(out[:, 7], x.std(dim=0, unbiased=False).mean().expand(6))
    identical = MinibatchStdDev()(torch.ones(4, 7))
    assert identical[:, 7].max() < 1e-3  # no spread at all: only sqrt(eps)


# --- spectral norm ---------------------------------------------------------------------------
def test_spectral_norm_keeps_top_singular_value_near_one():
    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 16, 16), base_channels=8, norm="none", spectral_norm=True)
    d.train()
    x = torch.randn(4, 1, 16, 16)
    for _ in range(15):  # each training forward runs one power iteration
        d(x)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05
    # off by default
    plain = DCGANDiscriminator((1, 16, 16), base_channels=8, norm="none")
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


def test_apply_spectral_norm_skips_other_layers():
    net = apply_spectral_norm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), MinibatchDiscrimination(4, 2, 2)))
    assert hasattr(net[0], "parametrizations") and not hasattr(net[1], "parametrizations")
    assert not hasattr(net[2], "parametrizations")


# --- discriminator options ------------------------------------------------------------------
DISCRIMINATORS = [
    lambda **kw: MLPDiscriminator((1, 8, 8), hidden=[16], **kw),
    lambda **kw: DCGANDiscriminator((1, 8, 8), base_channels=8, **kw),
    lambda **kw: SeedDCGANDiscriminator((1, 8, 8), **kw),
]
OPTIONS = [
    {"minibatch_stddev": True},
    {"minibatch_discrimination": MBD},
    {"spectral_norm": True},
    {"minibatch_stddev": True, "minibatch_discrimination": MBD, "spectral_norm": True},
]


@pytest.mark.parametrize("make", DISCRIMINATORS, ids=["mlp", "dcgan", "dcgan_seed"])
@pytest.mark.parametrize("options", OPTIONS, ids=["stddev", "mbd", "sn", "all"])
def test_discriminator_options_give_one_logit_and_train(make, options):
    torch.manual_seed(0)
    d = make(**options)
    x = torch.randn(8, 1, 8, 8)
    logits = d(x).logits
    assert logits.shape == (8,)
    logits.sum().backward()
    assert all(p.grad is not None for p in d.parameters())
    kinds = {type(m) for m in d.modules()}
    assert (MinibatchStdDev in kinds) == bool(options.get("minibatch_stddev"))
    assert (MinibatchDiscrimination in kinds) == ("minibatch_discrimination" in options)


@pytest.mark.parametrize("make", DISCRIMINATORS, ids=["mlp", "dcgan", "dcgan_seed"])
def test_default_options_add_nothing(make):
    d = make()
    kinds = {type(m) for m in d.modules()}
    assert not kinds & {MinibatchStdDev, MinibatchDiscrimination}
    assert not any(hasattr(m, "parametrizations") for m in d.modules())


def test_bad_minibatch_discrimination_option_is_named():
    with pytest.raises(ValueError, match="num_kernels"):
        MLPDiscriminator((4,), minibatch_discrimination={"kernels": 5})
