"""model.compile (torch.compile of G and D), model.channels_last and bf16 through trainer.precision:
the same training as the plain eager run, and a clear refusal where compiling cannot work."""
import warnings

import pytest
import torch

from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

STEPS = ["max_generator_steps=3", "seed=0"]


def final_weights(overrides, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(compose_train([*FAST, *TINY_DIGITS, *STEPS, *overrides], tmp_path))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("generator.", "discriminator."))}


def assert_same_training(a, b, rtol):
    assert a.keys() == b.keys()  # compiling in place keeps the parameter names, so checkpoints load as ever
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=rtol, atol=rtol, msg=key)


def test_compiled_and_eager_steps_agree(tmp_path):
    from torch._dynamo.utils import counters

    eager = final_weights(["model=mlp_small"], tmp_path / "eager")
    counters.clear()
    compiled = final_weights(["model=mlp_small", "model.compile=true"], tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] >= 2  # G and D really ran compiled
    assert_same_training(eager, compiled, rtol=1e-4)


def test_channels_last_trains_like_the_default_layout(tmp_path):
    tiny = ["model=dcgan", "model.generator.base_channels=8", "model.discriminator.base_channels=8"]
    default = final_weights(tiny, tmp_path / "default")
    channels_last = final_weights([*tiny, "model.channels_last=true"], tmp_path / "channels_last")
    assert_same_training(default, channels_last, rtol=1e-4)


@pytest.mark.parametrize("penalty", ["model.loss.r1_weight=5", "model.loss.gp_weight=10"])
def test_compile_with_a_penalty_that_differentiates_twice_is_refused_before_training(penalty, tmp_path):
    with pytest.raises(Exception) as err:
        train(compose_train([*FAST, *TINY_DIGITS, *STEPS, "model=mlp_small",
                           "model.compile=true", penalty], tmp_path))
    message = str(err.value) + str(err.value.__cause__ or "")
    assert "model.compile=true" in message and "double backward" in message
    assert not (tmp_path / "checkpoints").exists()


def test_bf16_mixed_precision_trains_on_the_cpu(tmp_path):
    weights = final_weights(["model=mlp_small", "trainer.precision=bf16-mixed"], tmp_path)
    assert all(torch.isfinite(v).all() for v in weights.values())
    eager = final_weights(["model=mlp_small"], tmp_path / "fp32")
    moved = [k for k in weights if weights[k].is_floating_point() and not torch.equal(weights[k], eager[k])]
    assert moved  # bf16 autocast really ran: the weights differ from the float32 run's
