"""The augment= group: DiffAugment and ADA are differentiable, keep shapes and dtypes, are the identity
when off, ADA's p follows D's overfitting and survives an exact resume, and both train end to end."""
from __future__ import annotations

import warnings

import pytest
import torch

from gan_modules.augment import (ADA_TRANSFORMS, DIFF_AUGMENT_POLICIES, AdaptiveAugmentation, Augmentation,
                                 DiffAugment, NoAugmentation)
from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

QUIET = ["callbacks.samples=null", "callbacks.training_plots=null"]


def images(channels: int, dtype: torch.dtype = torch.float32, size: tuple[int, int] = (12, 12)) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.rand(6, channels, *size, dtype=dtype) * 2 - 1).requires_grad_(True)


def ada(transform: str, p: float) -> AdaptiveAugmentation:
    with warnings.catch_warnings():  # a fixed p above 0.8 is warned about (leaking); wanted here
        warnings.simplefilter("ignore")
        return AdaptiveAugmentation(p=p, transforms=[transform])


def every_augmentation() -> list[tuple[str, Augmentation]]:
    return ([(f"diffaugment-{name}", DiffAugment(policy=[name])) for name in DIFF_AUGMENT_POLICIES]
            + [("diffaugment-all", DiffAugment())]
            + [(f"ada-{name}", ada(name, 1.0)) for name in ADA_TRANSFORMS])


# --- the transforms -------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name, augment", every_augmentation(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_augmentation_is_differentiable_and_keeps_shape_and_dtype(name, augment, channels):
    for dtype in (torch.float32, torch.float64):
        x = images(channels, dtype)
        y = augment(x)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        if not (name == "ada-saturation" and channels == 1):  # saturation needs colour: skipped on grayscale
            assert not torch.equal(y, x), f"{name} changed nothing"
        (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
        assert grad.abs().sum() > 0, f"no gradient reaches the input through {name}"


@pytest.mark.parametrize("channels", [1, 3])
def test_off_is_the_identity(channels):
    x = images(channels)
    assert torch.equal(DiffAugment(policy=[])(x), x)
    for name in ADA_TRANSFORMS:
        assert torch.equal(ada(name, 0.0)(x), x), name
    assert torch.equal(AdaptiveAugmentation(transforms=list(ADA_TRANSFORMS))(x), x)  # adaptive p starts at 0
    assert torch.equal(NoAugmentation()(x), x)


def test_ada_works_on_images_that_are_not_square():
    x = images(3, size=(8, 14))
    y = AdaptiveAugmentation(p=0.5, transforms=list(ADA_TRANSFORMS))(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_exact_transforms_move_whole_pixels():
    # rot90 alone rotates by quarter turns; DiffAugment's translation shifts with zeros coming in.
    x = images(1).detach()
    y = ada("rot90", 1.0)(x)
    for i in range(x.shape[0]):
        assert any(torch.allclose(y[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5) for k in range(4))
    moved = DiffAugment(policy=["translation"])(x)
    shift = 2  # round(12 / 8) pixels each way at most
    for i in range(x.shape[0]):
        assert any(torch.equal(moved[i, :, 4:8, 4:8], x[i, :, 4 - dy:8 - dy, 4 - dx:8 - dx])
                   for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1))


# --- ADA's probability ----------------------------------------------------------------------------

def observe_steps(augment: AdaptiveAugmentation, logit: float, steps: int, batch: int = 16) -> None:
    """``steps`` more D steps whose logits on the reals are all ``logit``."""
    done = getattr(augment, "_test_steps_done", 0)
    for step in range(done, done + steps):
        augment.observe(torch.full((batch,), logit), step)
    augment._test_steps_done = done + steps


def test_ada_p_rises_when_d_overfits_and_falls_otherwise():
    augment = AdaptiveAugmentation(interval=4, adjust_speed_images=640, target=0.6)
    observe_steps(augment, 5.0, 3)
    assert float(augment.p) == 0.0  # adjusted every 4 D steps only
    observe_steps(augment, 5.0, 5)  # r_t = 1 > 0.6: two adjustments of 16 * 4 / 640
    assert float(augment.p) == pytest.approx(0.2)
    assert float(augment.statistics()["augment_rt"]) == 1.0
    observe_steps(augment, -5.0, 4)  # r_t = -1 < 0.6
    assert float(augment.p) == pytest.approx(0.1)
    observe_steps(augment, -5.0, 40)
    assert float(augment.p) == 0.0  # clamped
    observe_steps(augment, 5.0, 400)
    assert float(augment.p) == 1.0
    assert set(augment.statistics()) == {"augment_p", "augment_rt"}


def test_a_fixed_p_does_not_move_and_is_not_taken_from_a_checkpoint():
    fixed = AdaptiveAugmentation(p=0.3, adjust_speed_images=10)
    observe_steps(fixed, 5.0, 40)
    assert float(fixed.statistics()["augment_p"]) == pytest.approx(0.3)
    assert "p" not in fixed.state_dict()  # the config's p wins on resume
    adaptive = AdaptiveAugmentation()
    assert "p" in adaptive.state_dict()


@pytest.mark.parametrize("key, value", [("p", 1.5), ("p", -0.1), ("initial_p", 2.0), ("target", -1.0)])
def test_probabilities_outside_0_1_are_refused(key, value):
    with pytest.raises(ValueError, match=f"model.loss.augment.{key} must be a probability in \\[0, 1\\]"):
        AdaptiveAugmentation(**{key: value})


def test_unknown_transforms_and_policies_are_refused():
    with pytest.raises(ValueError, match="unknown \\['hue'\\]"):
        AdaptiveAugmentation(transforms=["xflip", "hue"])
    with pytest.raises(ValueError, match="unknown \\['colour'\\]"):
        DiffAugment(policy=["colour"])


def test_p_outside_0_1_is_refused_from_the_command_line(tmp_path):
    with pytest.raises(Exception, match="model.loss.augment.p must be a probability"):
        train(compose_train([*FAST, *TINY_DIGITS, *QUIET, "augment=ada", "model.loss.augment.p=1.2",
                             "max_generator_steps=1"], tmp_path))


# --- data that are not images ---------------------------------------------------------------------

@pytest.mark.parametrize("augment", [DiffAugment(), AdaptiveAugmentation()], ids=["diffaugment", "ada"])
def test_points_are_refused_naming_augment_none(augment):
    with pytest.raises(ValueError, match="augment=none"):
        augment.check_data((2,))
    augment.check_data((1, 8, 8))


@pytest.mark.parametrize("name", ["ada", "diffaugment"])
def test_training_on_points_is_refused_before_any_work(name, tmp_path):
    cfg = compose_train([*FAST, *QUIET, "model=mlp_toy", "dataset=toy2d_ring", "dataset.batch_size=16",
                         f"augment={name}", "max_generator_steps=2"], tmp_path)
    with pytest.raises(ValueError, match="augment=none"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# --- training end to end --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ada", "diffaugment"])
def test_training_with_augmentation(name, tmp_path):
    extra = ["model.loss.augment.adjust_speed_images=100"] if name == "ada" else []
    metrics = train(compose_train([*FAST, *TINY_DIGITS, *QUIET, f"augment={name}", *extra, "max_generator_steps=8",
                                   "trainer.log_every_n_steps=1"], tmp_path))
    assert metrics["generator_steps"] == 8 and all(torch.isfinite(torch.tensor(v)) for v in metrics.values()
                                                   if isinstance(v, float))
    if name == "ada":
        assert 0.0 <= metrics["augment_p"] <= 1.0 and "augment_rt" in metrics
        assert metrics["augment_p"] > 0  # 8 D steps: two adjustments of 64 images / 100, from 0 only upwards


@pytest.mark.parametrize("name", ["ada", "diffaugment"])
@pytest.mark.parametrize("setting", [["model=cgan_dcgan"], ["loss=wgan_gp", "model.discriminator.norm=layer"]],
                         ids=["conditional", "gradient_penalty"])
def test_augmentation_with_a_conditional_model_and_with_the_gradient_penalty(name, setting, tmp_path):
    extra = ["model.loss.augment.p=0.5"] if name == "ada" else []
    metrics = train(compose_train([*FAST, *TINY_DIGITS, *QUIET, *setting, f"augment={name}", *extra,
                                   "max_generator_steps=2", "trainer.log_every_n_steps=1"], tmp_path))
    assert metrics["generator_steps"] == 2
    if "loss=wgan_gp" in setting:
        assert metrics["gradient_penalty"] > 0
    if name == "ada":
        assert metrics["augment_p"] == pytest.approx(0.5)


def test_an_exact_resume_restores_p(tmp_path):
    # 1437 training digits at batch 64: 22 generator steps per epoch; checkpoints at each epoch end.
    args = [*FAST, "dataset=digits", "dataset.batch_size=64", *QUIET, "augment=ada",
            "model.loss.augment.adjust_speed_images=2000"]
    train(compose_train([*args, "trainer.max_epochs=1"], tmp_path / "stopped"))
    stopped = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert float(stopped["loss.augment.p"]) > 0  # p moved, so the comparison below means something

    resume = f"ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.ckpt'}"
    resumed = train(compose_train([*args, "trainer.max_epochs=2", resume], tmp_path / "resumed"))
    whole = train(compose_train([*args, "trainer.max_epochs=2"], tmp_path / "whole"))
    assert resumed["augment_p"] == whole["augment_p"]
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert int(a["generator_steps"]) == int(b["generator_steps"]) == 44
    assert float(a["loss.augment.p"]) != float(stopped["loss.augment.p"])
    assert a.keys() == b.keys()
    for key in a:  # weights, p and its running sums alike
        assert torch.equal(a[key], b[key]), key
