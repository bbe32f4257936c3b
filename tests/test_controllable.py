"""Controllable generation: latent interpolation (linear, spherical), latent arithmetic, GIFs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from gan_modules.checkpoints import load_generator
from gan_modules.images import to_unit_range
from gan_modules.metrics.features import load_feature_net
from gan_modules.sampling import (
    animation_frames,
    class_exemplars,
    interpolation_path,
    latent_arithmetic,
    lerp,
    sample_in_batches,
    seed_latent,
    slerp,
)
from gan_modules.training import train
from generate import main as generate_main
from tests.conftest import FAST, TINY_DIGITS, compose_train

T = torch.linspace(0.0, 1.0, 9)


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(0)  # the random latents below are then the same on every run


@pytest.mark.parametrize("path", [lerp, slerp])
def test_paths_start_and_end_at_their_endpoints(path):
    a, b = torch.randn(16), torch.randn(16) * 2
    points = path(a, b, T)
    assert points.shape == (9, 16)
    torch.testing.assert_close(points[0], a)
    torch.testing.assert_close(points[-1], b)


def test_slerp_keeps_the_norm_of_equal_norm_endpoints_and_lerp_does_not():
    a, b = torch.randn(64), torch.randn(64)
    b = b * a.norm() / b.norm()
    torch.testing.assert_close(slerp(a, b, T).norm(dim=1), a.norm().expand(9))
    assert lerp(a, b, T)[4].norm() < 0.95 * a.norm()  # a straight line cuts through the interior


def test_slerp_norms_stay_between_the_endpoints_norms():
    a, b = torch.randn(32), 3 * torch.randn(32)
    norms = slerp(a, b, T).norm(dim=1)
    lo, hi = sorted((float(a.norm()), float(b.norm())))
    assert bool(((norms >= lo - 1e-5) & (norms <= hi + 1e-5)).all())


def test_slerp_of_parallel_latents_falls_back_to_lerp():
    a = torch.randn(8)
    torch.testing.assert_close(slerp(a, 2 * a, T), lerp(a, 2 * a, T))


def test_interpolation_path_and_animation_frames():
    latents = torch.stack([seed_latent(s, 4) for s in (1, 2, 3)])
    path = interpolation_path(latents, steps=5)
    assert path.shape == (2, 5, 4)
    torch.testing.assert_close(path[0, -1], path[1, 0])  # segments share their endpoint
    frames = animation_frames(path)
    assert len(frames) == 2 * 4 + 1  # the shared endpoint once
    torch.testing.assert_close(frames[0], latents[0])
    torch.testing.assert_close(frames[-1], latents[-1])
    with pytest.raises(ValueError, match="two latents"):
        interpolation_path(latents[:1], steps=5)


def test_class_exemplars_pick_the_most_confident_latents_and_arithmetic_averages():
    z = torch.arange(6, dtype=torch.float32).view(6, 1).repeat(1, 2)
    samples = torch.tensor([0, 0, 1, 1, 1, 2])  # "images" whose class is their value

    def classify(x):
        probs = torch.nn.functional.one_hot(x, 3).float() * 0.5 + 0.1
        probs[3, 1] = 0.9  # sample 3 is the clearest 1
        return probs

    chosen = class_exemplars(z, samples, classify, [0, 1, 2], count=1)
    assert chosen[1].tolist() == [[3.0, 3.0]]
    two = class_exemplars(z, samples, classify, [0, 1], count=2)
    torch.testing.assert_close(latent_arithmetic(two[0], two[1], two[0]), two[0].mean(0) - two[1].mean(0) + two[0].mean(0))
    with pytest.raises(ValueError, match="Only 1 of 6 samples.*class 2"):
        class_exemplars(z, samples, classify, [2], count=2)


# --- generate.py on a trained checkpoint --------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny unconditional MLP GAN trained for 5 generator steps on the digits."""
    out = tmp_path_factory.mktemp("gan")
    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", "model=mlp_small", "callbacks.samples=null",
                         "model.generator.z_dim=16"], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("spherical", [False, True], ids=["linear", "slerp"])
def test_interpolation_endpoints_are_the_seeds_own_samples(checkpoint, spherical):
    generator, _ = load_generator(checkpoint)
    latents = torch.stack([seed_latent(s, generator.z_dim) for s in (4, 9)])
    path = interpolation_path(latents, steps=6, spherical=spherical)
    along = sample_in_batches(generator, path.flatten(0, 1))
    ends = sample_in_batches(generator, latents)
    torch.testing.assert_close(along[0], ends[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(along[-1], ends[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seeds, frames", [("[1,2]", 7), ("[1,2,3]", 13)])
def test_generate_writes_an_interpolation_grid_and_gif(checkpoint, tmp_path, seeds, frames):
    png = generate_main([f"checkpoint={checkpoint}", f"interpolate={seeds}", "steps=7", "slerp=true",
                         f"interpolation_output={tmp_path / 'interp.png'}"])
    segments = frames // 6
    assert Image.open(png).size == (7 * 10 + 2, segments * 10 + 2)  # one row of `steps` images per segment
    gif = Image.open(png.with_suffix(".gif"))
    assert gif.n_frames == frames


def test_generate_writes_a_latent_arithmetic_grid(checkpoint, tmp_path):
    # Pick three classes the (barely trained) model does produce, by the same feature network.
    generator, _ = load_generator(checkpoint)
    pool = torch.randn(300, generator.z_dim, generator=torch.Generator().manual_seed(0))
    net, _ = load_feature_net("digits")
    with torch.no_grad():
        predicted = net.eval()(to_unit_range(sample_in_batches(generator, pool), generator.output_range)).argmax(1)
    counts = torch.bincount(predicted, minlength=10)
    a, b = counts.argsort(descending=True)[:2].tolist()
    path = generate_main([f"checkpoint={checkpoint}", f"arithmetic=[{a},{b},{a}]", "arithmetic_pool=300",
                          "arithmetic_exemplars=2", f"arithmetic_output={tmp_path / 'arith.png'}"])
    assert Image.open(path).size == (3 * 10 + 2, 4 * 10 + 2)  # rows a, b, c, result; 2 exemplars + the mean


def test_generate_refuses_impossible_requests(checkpoint):
    ckpt = f"checkpoint={checkpoint}"
    with pytest.raises(SystemExit, match="conditional model"):
        generate_main([ckpt, "labels=[1]"])
    with pytest.raises(SystemExit, match="two or more seeds"):
        generate_main([ckpt, "interpolate=[1]"])
    with pytest.raises(SystemExit, match="three classes"):
        generate_main([ckpt, "arithmetic=[1,2]"])
