"""Checkpoints from elsewhere: no code runs on load unless the user trusts it; corrupt files fail clearly."""
import subprocess
import sys

import pytest
import torch

from gan_modules.checkpoints import foreign_targets, load_generator
from gan_modules.nets.mlp import MLPGenerator
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train


class UserGenerator(MLPGenerator):
    """A user's own model class, outside the project's packages."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train([*FAST, *TINY_DIGITS, "model=mlp_small", "debug=default", "callbacks.samples=null"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def with_generator_target(checkpoint, target: str, path):
    state = torch.load(checkpoint, weights_only=True)
    state["run_config"]["model"]["generator"]["_target_"] = target
    torch.save(state, path)
    return path


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "generate.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_project_checkpoints_name_only_project_classes(checkpoint):
    cfg = torch.load(checkpoint, weights_only=True)["run_config"]
    from omegaconf import OmegaConf

    assert foreign_targets(OmegaConf.create(cfg)) == []


def test_foreign_class_is_refused_without_the_trust_flag(checkpoint, tmp_path):
    foreign = with_generator_target(checkpoint, "os.system", tmp_path / "foreign.ckpt")
    result = generate(f"checkpoint={foreign}", "num_samples=2", f"output={tmp_path / 'x.npz'}")
    assert result.returncode != 0
    assert "os.system" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert not (tmp_path / "x.npz").exists()
    evaluated = subprocess.run([sys.executable, "evaluate.py", f"checkpoint={foreign}"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode != 0 and "trust_checkpoint=true" in evaluated.stderr


def test_trusted_user_model_loads(checkpoint, tmp_path):
    own = with_generator_target(checkpoint, f"{__name__}.UserGenerator", tmp_path / "own.ckpt")
    with pytest.raises(ValueError, match="outside this project"):
        load_generator(own)
    generator, _ = load_generator(own, trust=True)
    reference, _ = load_generator(checkpoint)
    z = torch.randn(3, generator.z_dim)
    assert isinstance(generator, UserGenerator) and torch.equal(generator(z), reference(z))


def test_corrupt_resume_checkpoint_stops_before_training(checkpoint, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    run_dir = tmp_path / "run"
    cfg = compose_train([*FAST, *TINY_DIGITS, "model=mlp_small", "debug=default", f"ckpt_path={truncated}"], run_dir)
    with pytest.raises(ValueError, match="cannot be read"):
        train(cfg)
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello, I am text\n", "cannot be read"),
])
def test_a_text_or_empty_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_generator(path)


def edited(checkpoint, path, edit):
    state = torch.load(checkpoint, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def test_renamed_weights_say_which_keys_do_not_fit(checkpoint, tmp_path):
    def rename(state):
        weights = state["state_dict"]
        key = next(k for k in weights if k.startswith("generator."))
        weights[key.replace("generator.", "generator.renamed_")] = weights.pop(key)

    with pytest.raises(ValueError, match="do not fit the model.*missing: .*unexpected: .*renamed_"):
        load_generator(edited(checkpoint, tmp_path / "renamed.ckpt", rename))


def test_a_config_without_a_model_is_a_clear_error(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="no model.generator"):
        load_generator(edited(checkpoint, tmp_path / "nomodel.ckpt", lambda s: s["run_config"].pop("model")))


def test_non_finite_weights_are_refused_naming_the_tensor(checkpoint, tmp_path):
    def poison(state):
        key = next(k for k in state["state_dict"] if k.startswith("generator.") and k.endswith("weight"))
        state["state_dict"][key][0] = float("nan")

    with pytest.raises(ValueError, match=r"weight .*weight holds NaN or Inf"):
        load_generator(edited(checkpoint, tmp_path / "nan.ckpt", poison))
