"""ProGAN's layers and networks: equalized learning rate, pixel norm, growth and fade-in."""
import math

import pytest
import torch
import torch.nn.functional as F

from gan_modules.nets.layers import AdaIN, ConstantInput, EqualizedConv2d, EqualizedLinear, NoiseInjection, PixelNorm
from gan_modules.losses import drift_penalty
from gan_modules.objectives import GANLoss
from gan_modules.nets.progan import ProGANDiscriminator, ProGANGenerator
from gan_modules.nets.progressive import downsample, fade, fully_grown, stage_count, upsample

SIZES = {"channel_base": 64, "max_channels": 16}


def networks(resolution: int = 32, channels: int = 1) -> tuple[ProGANGenerator, ProGANDiscriminator]:
    torch.manual_seed(0)
    shape = [channels, resolution, resolution]
    return ProGANGenerator(shape, z_dim=8, **SIZES), ProGANDiscriminator(shape, **SIZES)


# --- equalized learning rate ---------------------------------------------------------------------
def test_equalized_weights_are_unit_normal_and_scaled_by_the_he_constant_at_run_time():
    torch.manual_seed(0)
    linear, conv = EqualizedLinear(400, 300), EqualizedConv2d(32, 48, 3)
    for layer, fan_in in ((linear, 400), (conv, 32 * 9)):
        assert abs(layer.weight.std().item() - 1.0) < 0.02 and abs(layer.weight.mean().item()) < 0.05
        assert layer.weight_scale == pytest.approx(math.sqrt(2.0 / fan_in))
    x = torch.randn(8, 400)
    assert torch.allclose(linear(x), F.linear(x, linear.weight * math.sqrt(2.0 / 400), linear.bias), atol=1e-6)
    # He scaling: unit-variance input, output variance gain^2 = 2 (interior pixels of the conv)
    assert linear(torch.randn(4096, 400)).var().item() == pytest.approx(2.0, rel=0.1)
    assert conv(torch.randn(64, 32, 12, 12))[:, :, 1:-1, 1:-1].var().item() == pytest.approx(2.0, rel=0.1)


def test_lr_multiplier_keeps_the_initial_scale_and_slows_adam_by_that_factor():
    torch.manual_seed(0)
    slow, fast = EqualizedLinear(64, 32, lr_multiplier=0.01, bias_init=0.5), EqualizedLinear(64, 32, bias_init=0.5)
    assert (slow.weight * slow.weight_scale).std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert torch.allclose(slow(torch.zeros(1, 64)), torch.full((1, 32), 0.5))  # bias_init is the effective bias
    with torch.no_grad():
        slow.weight.copy_(fast.weight / 0.01)  # the same function, stored differently
    x = torch.randn(16, 64)
    assert torch.allclose(slow(x), fast(x), atol=1e-5)
    moves = []
    for layer in (slow, fast):
        before = (layer.weight * layer.weight_scale).detach().clone()
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
        layer(x).pow(2).sum().backward()
        optimizer.step()
        moves.append(((layer.weight * layer.weight_scale).detach() - before).abs().mean())
    assert moves[0] / moves[1] == pytest.approx(0.01, rel=0.05)


def test_pixel_norm_gives_unit_rms_per_pixel():
    x = torch.randn(4, 16, 5, 5) * 7.0
    rms = PixelNorm()(x).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-4)


def test_adain_sets_each_channel_to_the_style_mean_and_scale():
    torch.manual_seed(0)
    adain = AdaIN(channels=6, w_dim=4)
    x, w = torch.randn(3, 6, 8, 8) * 5 + 2, torch.randn(3, 4)
    scale, shift = adain.style(w).chunk(2, dim=1)
    out = adain(x, w)
    assert torch.allclose(out.mean(dim=(2, 3)), shift, atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), correction=0), scale.abs(), atol=1e-3)


def test_noise_injection_starts_off_and_learns_a_per_channel_scale():
    layer, x = NoiseInjection(4), torch.randn(2, 4, 6, 6)
    assert torch.equal(layer(x), x)  # weights start at zero
    noise = torch.randn(2, 1, 6, 6)
    layer(x, noise).sum().backward()
    assert torch.allclose(layer.weight.grad, noise.sum().expand(4))
    assert ConstantInput(5)(3).shape == (3, 5, 4, 4)


# --- growth --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_every_stage_has_its_resolution(alpha):
    G, D = networks(32, channels=3)
    z = torch.randn(4, 8)
    assert stage_count(32) == G.num_stages == D.num_stages == 4
    for stage in range(4):
        G.set_progress(stage, alpha)
        D.set_progress(stage, alpha)
        images = G(z)
        assert images.shape == (4, 3, 4 * 2**stage, 4 * 2**stage)
        assert D(images).logits.shape == (4,)


def test_fade_in_at_alpha_zero_reproduces_the_previous_stage():
    G, D = networks()
    z, x = torch.randn(4, 8), torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        for stage in range(1, G.num_stages):
            G.set_progress(stage - 1, 1.0)
            D.set_progress(stage - 1, 1.0)
            previous_g, previous_d = upsample(G(z)), D(downsample(x[..., : 4 * 2**stage, : 4 * 2**stage])).logits
            G.set_progress(stage, 0.0)
            D.set_progress(stage, 0.0)
            assert torch.equal(G(z), previous_g)
            assert torch.equal(D(x[..., : 4 * 2**stage, : 4 * 2**stage]).logits, previous_d)
            G.set_progress(stage, 1.0)
            assert not torch.allclose(G(z), previous_g)  # alpha = 1: the new block's own output


def test_a_fully_grown_network_is_the_default_and_progress_is_checked():
    G, D = networks(16)
    assert (int(G.stage), float(G.alpha), G.current_resolution) == (2, 1.0, 16)
    assert G(torch.randn(2, 8)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="takes 16x16 images"):
        D(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="stage"):
        G.set_progress(3, 1.0)
    with pytest.raises(ValueError, match="power-of-two"):
        ProGANGenerator([1, 28, 28])


def test_stage_and_alpha_travel_in_the_state_dict():
    G, _ = networks(16)
    G.set_progress(1, 0.25)
    loaded, _ = networks(16)
    loaded.load_state_dict(G.state_dict())
    assert (int(loaded.stage), float(loaded.alpha)) == (1, 0.25)


def test_fully_grown_only_at_the_last_stage_with_alpha_one():
    G, _ = networks(16)
    assert fully_grown(G) and fully_grown(torch.nn.Linear(2, 2))
    G.set_progress(2, 0.5)
    assert not fully_grown(G)
    G.set_progress(1, 1.0)
    assert not fully_grown(G)


def test_fade_takes_mixed_precision_inputs():
    # Under CUDA autocast a conv gives bf16 and an upsampled map fp32; the blend must take both.
    old, new = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bfloat16)
    blended = fade(old, new, torch.tensor(0.25))
    assert blended.dtype == torch.float32 and torch.allclose(blended, torch.full((2, 3), 0.25))


def test_drift_penalty_is_the_mean_squared_real_output():
    assert drift_penalty(torch.tensor([1.0, -2.0, 3.0])).item() == pytest.approx(14 / 3)
    with pytest.raises(ValueError, match="drift_weight"):
        GANLoss("wasserstein", drift_weight=-1.0)
