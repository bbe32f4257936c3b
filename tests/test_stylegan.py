"""StyleGAN's generator: growth, style mixing, truncation, the tracked mean w, the mapping's lr multiplier."""
from __future__ import annotations

import math

import pytest
import torch

from gan_modules.nets.layers import EqualizedLinear
from gan_modules.nets.progressive import upsample
from gan_modules.nets.stylegan import MappingNetwork, StyleGANGenerator


def tiny(**kwargs) -> StyleGANGenerator:
    torch.manual_seed(0)
    options = dict(out_shape=[1, 16, 16], z_dim=8, w_dim=12, mapping_layers=3, channel_base=64, max_channels=16)
    return StyleGANGenerator(**{**options, **kwargs})


def with_noise_weights(g: StyleGANGenerator, value: float = 0.3) -> StyleGANGenerator:
    """NoiseInjection starts at zero scale, which would hide any noise bug: make it visible."""
    with torch.no_grad():
        for layer in g.layers:
            layer.noise.weight.fill_(value)
    return g


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_at_every_stage(channels):
    g = tiny(out_shape=[channels, 16, 16])
    assert (g.num_stages, g.num_ws, g.out_shape, g.output_range) == (3, 6, (channels, 16, 16), (-1.0, 1.0))
    z = torch.randn(5, 8)
    assert g(z).shape == (5, channels, 16, 16)  # never grown: full resolution
    for stage, size in enumerate((4, 8, 16)):
        for alpha in (0.0, 0.5, 1.0):
            g.set_progress(stage, alpha)
            out = g(z)
            assert out.shape == (5, channels, size, size)
            assert out.abs().max() <= 1.0  # tanh


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="power-of-two"):
        tiny(out_shape=[1, 28, 28])
    with pytest.raises(ValueError, match="square images"):
        tiny(out_shape=[1, 16, 8])
    with pytest.raises(ValueError, match="noise_mode"):
        tiny()(torch.randn(2, 8), noise_mode="fixed")
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        tiny()(torch.randn(2, 9))
    with pytest.raises(ValueError, match="crossover"):
        g = tiny()
        g.mix(torch.zeros(1, 6, 12), torch.zeros(1, 6, 12), 7)


@pytest.mark.parametrize("fixed_noise", [False, True], ids=["no_noise", "fixed_noise"])
def test_at_alpha_zero_the_grown_generator_is_the_previous_stage_upsampled(fixed_noise):
    g = with_noise_weights(tiny()).eval()
    with torch.no_grad():  # give the to-RGB biases something to lose if the fade is wrong
        for rgb in g.to_rgb:
            rgb.bias.normal_()
    ws = g.broadcast(g.map(torch.randn(4, 8)))
    noise = g.make_noise(4, torch.Generator().manual_seed(1)) if fixed_noise else None
    for stage in (1, 2):
        g.set_progress(stage - 1, 1.0)
        previous = g.synthesis(ws, "none", noise)
        g.set_progress(stage, 0.0)
        faded_in = g.synthesis(ws, "none", noise)
        torch.testing.assert_close(faded_in, upsample(previous), rtol=0, atol=0)
        g.set_progress(stage, 1.0)  # the new block does change the picture once it has taken over
        assert (g.synthesis(ws, "none", noise) - upsample(previous)).abs().max() > 1e-3


def test_noise_modes():
    g = with_noise_weights(tiny()).eval()
    z = torch.randn(3, 8)
    torch.testing.assert_close(g(z, noise_mode="none"), g(z, noise_mode="none"), rtol=0, atol=0)
    assert (g(z) - g(z)).abs().max() > 1e-4  # "random": fresh noise each call
    noise = g.make_noise(3, torch.Generator().manual_seed(0))
    ws = g.broadcast(g.map(z))
    fixed = g.synthesis(ws, noise=noise)
    torch.testing.assert_close(fixed, g.synthesis(ws, noise=noise), rtol=0, atol=0)
    assert (fixed - g.synthesis(ws, "none")).abs().max() > 1e-4


def test_mix_takes_coarse_styles_from_the_first_code_and_fine_from_the_second():
    g = tiny().eval()
    za, zb, zc = torch.randn(3, 2, 8)
    ws_a, ws_b = g.broadcast(g.map(za)), g.broadcast(g.map(zb))
    mixed = g.mix(ws_a, ws_b, 2)
    assert torch.equal(mixed[:, :2], ws_a[:, :2]) and torch.equal(mixed[:, 2:], ws_b[:, 2:])
    image = g.synthesis(mixed, "none")
    other_coarse = g.synthesis(g.mix(g.broadcast(g.map(zc)), ws_b, 2), "none")
    other_fine = g.synthesis(g.mix(ws_a, g.broadcast(g.map(zc)), 2), "none")
    assert (image - other_coarse).abs().max() > 1e-3  # both codes matter
    assert (image - other_fine).abs().max() > 1e-3


def test_training_forward_mixes_in_a_second_random_code():
    z = torch.randn(4, 8)

    def train_forward(g: StyleGANGenerator, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return g.train()(z, noise_mode="none")

    mixing = tiny(style_mixing_prob=1.0)
    unmixed = mixing.eval()(z, noise_mode="none")
    a, b = train_forward(mixing, 0), train_forward(mixing, 1)
    assert (a - b).abs().max() > 1e-3  # the second code comes from the random stream
    assert (a - unmixed).abs().max() > 1e-3 and (b - unmixed).abs().max() > 1e-3
    torch.testing.assert_close(a, train_forward(mixing, 0), rtol=0, atol=0)
    never = tiny(style_mixing_prob=0.0)
    torch.testing.assert_close(train_forward(never, 0), train_forward(never, 1), rtol=0, atol=0)
    torch.testing.assert_close(train_forward(never, 0), never.eval()(z, noise_mode="none"), rtol=0, atol=0)


def test_truncation_with_psi_zero_returns_the_mean_image():
    g = tiny()
    for _ in range(5):  # a w_avg away from zero
        g.train()(torch.randn(16, 8))
    g.eval()
    assert g.w_avg.abs().max() > 0
    z = torch.randn(6, 8)
    mean_image = g.synthesis(g.broadcast(g.w_avg[None]), "none")
    truncated = g(z, truncation_psi=0.0, noise_mode="none")
    torch.testing.assert_close(truncated, mean_image.expand_as(truncated), rtol=0, atol=1e-5)
    assert (g(z, noise_mode="none") - mean_image).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    w = g.map(z)
    torch.testing.assert_close(g.truncate(w, 0.5), (w + g.w_avg) / 2)
    torch.testing.assert_close(g.truncate(w, -1.0), 2 * g.w_avg - w)


def test_w_avg_tracks_mapped_ws_in_training_mode_only():
    g = tiny(w_avg_beta=0.9)
    z = torch.randn(32, 8)
    target = g.map(z).detach().mean(0)
    assert torch.equal(g.w_avg, torch.zeros(12))
    g.train()(z)
    torch.testing.assert_close(g.w_avg, 0.1 * target)  # one step of the moving average from zero
    distances = []
    for _ in range(20):
        g(z)
        distances.append(float((g.w_avg - target).norm()))
    assert all(b < a for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 0.15 * float(target.norm())
    before = g.w_avg.clone()
    g.eval()(torch.randn(32, 8))
    assert torch.equal(g.w_avg, before)
    assert "w_avg" in g.state_dict()  # saved in checkpoints


def test_mapping_lr_multiplier_stores_large_weights_with_he_scaled_effective_weights():
    torch.manual_seed(0)
    mapping = MappingNetwork(256, 256, num_layers=2, lr_multiplier=0.01)
    layers = [m for m in mapping.modules() if isinstance(m, EqualizedLinear)]
    assert len(layers) == 2 and all(m.lr_multiplier == 0.01 for m in layers)
    for layer in layers:
        assert layer.weight.std().item() == pytest.approx(100.0, rel=0.02)  # 1 / lr_multiplier
        effective = layer.weight * layer.weight_scale
        assert effective.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.02)  # He
    assert tiny().mapping.net[1].lr_multiplier == 0.01  # the generator's default


def test_mapping_lr_multiplier_slows_the_effective_weights_by_that_factor():
    def effective_step(lr_multiplier: float) -> float:
        torch.manual_seed(0)
        layer = EqualizedLinear(64, 64, lr_multiplier=lr_multiplier)
        before = (layer.weight * layer.weight_scale).detach().clone()
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        layer(torch.randn(16, 64)).square().mean().backward()
        opt.step()
        return float(((layer.weight * layer.weight_scale).detach() - before).abs().mean())

    assert effective_step(0.01) / effective_step(1.0) == pytest.approx(0.01, rel=0.01)


def test_gradients_reach_every_parameter_in_a_training_step():
    g = with_noise_weights(tiny(out_shape=[3, 16, 16], style_mixing_prob=1.0)).train()
    for stage in (1, 2):  # fading in: each stage's to-RGB layer is in use at one of these
        g.set_progress(stage, 0.5)
        g(torch.randn(4, 8)).square().mean().backward()
    missing = [name for name, p in g.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing, f"no gradient reaches {missing}"
    assert {"const.weight", "layers.0.bias", "layers.5.noise.weight", "mapping.net.1.weight"} <= {
        name for name, _ in g.named_parameters()}
