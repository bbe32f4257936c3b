"""StyleGAN2: modulated convolutions, the skip generator, the residual discriminator, path length."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gan_modules.nets.stylegan2 import (ModulatedConv2d, StyleGAN2Discriminator, StyleGAN2Generator, downsample_2x,
                                        upsample_2x)
from gan_modules.objectives import GANLoss, Pass, PathLengthPenalty
from gan_modules.training import train
from tests.conftest import FAST, compose_train

TINY = dict(z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, max_channels=16)
TINY_RUN = [*FAST, "experiment=stylegan2_fashion32", "dataset=digits", "dataset.image_size=8", "dataset.batch_size=8",
            "model.generator.z_dim=8", "model.generator.w_dim=8", "model.generator.channel_base=32",
            "model.discriminator.channel_base=32", "callbacks.samples=null", "callbacks.training_plots=null",
            "model.loss.r1_interval=2", "model.loss.pl_interval=2"]


def test_a_modulated_conv_with_unit_styles_and_no_demodulation_is_a_plain_conv():
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, w_dim=4, demodulate=False)
    with torch.no_grad():
        conv.affine.weight.zero_()  # styles = the bias = 1
    x, w = torch.randn(2, 5, 6, 6), torch.randn(2, 4)
    expected = F.conv2d(x, conv.weight * conv.weight_scale, padding=1)
    torch.testing.assert_close(conv(x, w), expected)


def test_demodulation_gives_unit_output_variance():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 32, 3, w_dim=16)
    with torch.no_grad():
        conv.affine.weight.normal_()  # styles far from 1, different per sample
    x = torch.randn(4, 64, 32, 32)
    y = conv(x, torch.randn(4, 16))[..., 1:-1, 1:-1]  # away from the zero padding
    variance = y.var(dim=(2, 3))  # per sample and output channel
    assert variance.mean().item() == pytest.approx(1.0, abs=0.05)
    assert 0.6 < variance.min().item() and variance.max().item() < 1.5
    undemodulated = F.conv2d(x * conv.affine(torch.randn(4, 16)).view(4, 64, 1, 1), conv.weight * conv.weight_scale)
    assert abs(undemodulated.var().item() - 1.0) > 0.5  # without it the scale follows the styles


def test_resampling_keeps_a_constant_image_constant():
    x = torch.full((1, 2, 8, 8), 3.0)
    torch.testing.assert_close(upsample_2x(x)[..., 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))
    torch.testing.assert_close(downsample_2x(x)[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0))
    assert upsample_2x(x).shape[-1] == 16 and downsample_2x(x).shape[-1] == 4


@pytest.mark.parametrize("size", [4, 8, 32])
def test_shapes_styles_and_noise(size):
    torch.manual_seed(0)
    g = StyleGAN2Generator([3, size, size], **TINY)
    d = StyleGAN2Discriminator([3, size, size], channel_base=64, max_channels=16)
    assert g.num_ws == 2 * (int(math.log2(size)) - 1)
    images = g(torch.randn(4, 8))
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1.0
    out = d(images)
    assert out.logits.shape == (4,) and out.features.shape == (4, d.feature_dim)
    g.eval()
    ws = g.broadcast(g.map(torch.randn(2, 8)))
    noise = g.make_noise(2, torch.Generator().manual_seed(1))
    assert [n.shape[-1] for n in noise] == [g.resolutions[(i + 1) // 2] for i in range(len(g.layers))]
    torch.testing.assert_close(g.synthesis(ws, noise=noise), g.synthesis(ws, noise=noise))
    torch.testing.assert_close(g.synthesis(ws, noise_mode="none"), g.synthesis(ws, noise_mode="none"))


def test_sizes_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="power-of-two"):
        StyleGAN2Generator([1, 28, 28], **TINY)
    with pytest.raises(ValueError, match="power-of-two"):
        StyleGAN2Discriminator([1, 28, 28])


def path_length_pass(generator, z):
    fake = generator(z)
    return Pass(discriminator=None, fake=fake, fake_out=None, generator=generator, z=z)


def test_path_length_value_and_running_mean():
    torch.manual_seed(0)
    g = StyleGAN2Generator([1, 8, 8], **TINY)
    term = PathLengthPenalty(weight=1.0, decay=0.5, batch_shrink=2)
    z = torch.randn(6, 8)

    def expected_lengths(seed):
        torch.manual_seed(seed)
        ws = g.broadcast(g.map(z[:3]))
        images = g.synthesis(ws)
        noise = torch.randn_like(images) / math.sqrt(64)
        (grad,) = torch.autograd.grad((images * noise).sum(), ws)
        return grad.square().sum(2).mean(1).sqrt()

    first = expected_lengths(5)
    p = path_length_pass(g, z)
    torch.manual_seed(5)
    value = term.value(p)
    mean = 0.5 * first.mean()
    torch.testing.assert_close(term.mean, mean)
    torch.testing.assert_close(value, (first - mean).square().mean())
    value.backward()  # the penalty trains G
    assert g.mapping.net[1].weight.grad is not None
    second = expected_lengths(6)
    p = path_length_pass(g, z)
    torch.manual_seed(6)
    term.value(p)
    torch.testing.assert_close(term.mean, mean + 0.5 * (second.mean() - mean))


def test_path_length_is_lazy_and_scaled_by_its_interval():
    torch.manual_seed(0)
    g = StyleGAN2Generator([1, 8, 8], **TINY)
    d = StyleGAN2Discriminator([1, 8, 8], channel_base=64, max_channels=16)
    loss = GANLoss(pl_weight=2.0, pl_interval=3)
    z = torch.randn(4, 8)
    for step in range(4):
        torch.manual_seed(step)
        total, stats = loss.generator_objective(g, d, z, None, step)
        applied = (total - stats["g_loss"]).item()
        if step % 3 == 0:
            assert applied == pytest.approx(2.0 * 3 * stats["path_length_penalty"].item(), rel=1e-5)
        else:
            assert applied == pytest.approx(0.0, abs=1e-6)
        assert "path_length_mean" in stats


def test_the_recipe_trains_with_lazy_r1_and_path_length(tmp_path):
    metrics = train(compose_train([*TINY_RUN, "max_generator_steps=4", "trainer.log_every_n_steps=1"], tmp_path))
    assert metrics["generator_steps"] == 4
    for key in ("r1_penalty", "path_length_penalty", "path_length_mean"):
        assert math.isfinite(metrics[key]), key


def test_conditional_stylegan2_trains_and_refuses_path_length(tmp_path):
    conditional = [*TINY_RUN, "model=cgan_stylegan2", "model.generator.backbone.z_dim=8", "model.generator.backbone.w_dim=8",
                   "model.generator.backbone.channel_base=32", "model.discriminator.backbone.channel_base=32",
                   "max_generator_steps=2"]
    conditional = [o for o in conditional if not o.startswith(("model.generator.z_dim", "model.generator.w_dim",
                                                               "model.generator.channel_base",
                                                               "model.discriminator.channel_base"))]
    assert train(compose_train([*conditional, "model.loss.pl_weight=0"], tmp_path / "ok"))["generator_steps"] == 2
    with pytest.raises(ValueError, match="needs an unconditional style-based generator"):
        train(compose_train(conditional, tmp_path / "pl"))
