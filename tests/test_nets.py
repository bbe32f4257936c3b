"""Network shapes, value ranges and the clear errors for sizes an architecture cannot make."""
import pytest
import torch

from gan_modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator, split_size
from gan_modules.nets.dcgan_seed import SeedDCGANDiscriminator, SeedDCGANGenerator
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8), (3, 48, 48)])
def test_dcgan_makes_any_supported_size(shape):
    g, d = DCGANGenerator(shape, z_dim=16, base_channels=8), DCGANDiscriminator(shape, base_channels=8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, *shape)
    assert x.abs().max() <= 1.0  # tanh
    assert d(x).logits.shape == (3,)


def test_dcgan_architecture_follows_radford():
    g, d = DCGANGenerator((1, 28, 28)), DCGANDiscriminator((1, 28, 28))
    assert not any(isinstance(m, torch.nn.Linear) for m in list(g.modules()) + list(d.modules()))
    assert any(isinstance(m, torch.nn.ReLU) for m in g.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in d.modules())
    first_conv_std = d.net[0].weight.std().item()
    assert 0.015 < first_conv_std < 0.025  # N(0, 0.02) init


@pytest.mark.parametrize("size", [30, 4, 9, 100])
def test_dcgan_rejects_sizes_it_cannot_make(size):
    with pytest.raises(ValueError, match="b \\* 2\\^n"):
        split_size(size)


def test_split_size():
    assert split_size(28) == (7, 2) and split_size(32) == (4, 3) and split_size(64) == (4, 4)


def test_seed_dcgan_layers_match_the_keras_recipe():
    g, d = SeedDCGANGenerator((1, 28, 28)), SeedDCGANDiscriminator((1, 28, 28))
    assert g.project.out_features == 7 * 7 * 128
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(64, (5, 5), (2, 2)), (1, (5, 5), (2, 2))]
    bns = [m for m in g.net if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3) for bn in bns)
    assert [m.p for m in d.net if isinstance(m, torch.nn.Dropout)] == [0.4, 0.4]
    x = g(torch.randn(2, 100))
    assert x.shape == (2, 1, 28, 28) and d(x).logits.shape == (2,)


def test_mlp_generator_seed_001_blocks_and_output_range():
    g = MLPGenerator((1, 28, 28), z_dim=10, hidden=[128, 256, 512, 1024], batch_norm=True, output_activation="sigmoid")
    widths = [m.out_features for m in g.net if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 256, 512, 1024, 784]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in g.net) == 4
    x = g(torch.randn(4, 10))
    assert x.shape == (4, 1, 28, 28) and x.min() >= 0 and x.max() <= 1 and g.output_range == (0.0, 1.0)
    d = MLPDiscriminator((1, 28, 28), hidden=[512, 256, 128])
    assert d(x).logits.shape == (4,)


def test_vector_generator_has_no_range():
    g = MLPGenerator((2,), z_dim=2, output_activation="identity")
    assert g(torch.randn(5, 2)).shape == (5, 2) and g.output_range is None


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="output_activation"):
        MLPGenerator((2,), output_activation="relu6")
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator((1, 28, 28), norm="spectral_batch")
    with pytest.raises(ValueError, match="model.discriminator.norm"):  # 8x8: no layer that would normalise
        DCGANDiscriminator((1, 8, 8), norm="bogus")
    with pytest.raises(ValueError, match="square"):
        DCGANGenerator((2,))


def test_uniform_latent_maps_normal_noise_to_unit_variance_uniform():
    from gan_modules.nets.mlp import normal_to_uniform

    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    u = normal_to_uniform(z)
    bound = 3 ** 0.5
    assert u.abs().max() < bound
    # quantiles of U(-sqrt 3, sqrt 3): equally spaced
    expected = torch.linspace(-bound, bound, 11)[1:-1]
    assert torch.allclose(torch.quantile(u, torch.linspace(0.1, 0.9, 9)), expected, atol=0.02)
    assert abs(float(u.mean())) < 0.01 and abs(float(u.var()) - 1.0) < 0.01


def test_uniform_latent_generator_feeds_its_layers_the_mapped_noise_and_keeps_its_weights():
    from gan_modules.nets.mlp import normal_to_uniform

    torch.manual_seed(0)
    normal = MLPGenerator((2,), z_dim=2, hidden=[8], output_activation="identity")
    uniform = MLPGenerator((2,), z_dim=2, hidden=[8], output_activation="identity", latent="uniform")
    uniform.load_state_dict(normal.state_dict())  # the same parameters: a checkpoint loads either way
    z = torch.randn(16, 2)
    assert torch.allclose(uniform(z), normal(normal_to_uniform(z)))
    assert not torch.allclose(uniform(z), normal(z))
    with pytest.raises(ValueError, match="Unknown latent 'gaussian'.*model.generator.latent"):
        MLPGenerator((2,), z_dim=2, latent="gaussian")
