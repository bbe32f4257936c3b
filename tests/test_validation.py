"""Config checks before any work: Hydra's struct mode for unknown keys, and validate_config's combinations."""
from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from gan_modules.training import train
from gan_modules.preflight import ConfigError, optimized_value, validate_config
from tests.conftest import ROOT, compose_train


def test_a_mistyped_key_on_the_command_line_stops_at_once_naming_it():
    result = subprocess.run([sys.executable, "train.py", "max_generator_step=5"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "max_generator_step" in result.stderr and "not in struct" in result.stderr


def test_n_critic_below_one_fails_before_training(tmp_path):
    cfg = compose_train(["dataset=digits", "model.n_critic=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.n_critic=0: must be an integer >= 1"):
        train(cfg)
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("overrides, match", [
    (["max_generator_steps=10", "+trainer.max_steps=30"], "Give one"),
    (["+trainer.gradient_clip_val=1.0"], "model.grad_clip_d"),
    (["+trainer.accumulate_grad_batches=4"], "dataset.batch_size"),
    (["trainer.strategy=ddp", "trainer.devices=2"], "trainer=ddp"),
    (["trainer.devices=4"], "trainer=ddp"),  # strategy auto on several devices picks plain DDP
    (["trainer=ddp", "trainer.strategy=ddp_spawn"], "ddp_spawn"),
    (["optimized_metric=quality/fid"], "callbacks=quality"),
])
def test_combinations_that_cannot_work_are_config_errors(tmp_path, overrides, match):
    cfg = compose_train(["dataset=digits", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=match):  # and train() checks before any work
        train(cfg)
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("overrides", [
    [], ["trainer=ddp"], ["trainer=ddp_cpu"], ["max_generator_steps=10"],
    ["callbacks=quality", "optimized_metric=quality/fid"], ["optimized_metric=d_acc_real"],
    ["trainer.strategy={_target_:pytorch_lightning.strategies.DDPStrategy,find_unused_parameters:true}",
     "trainer.devices=2"],
])
def test_working_configs_pass(tmp_path, overrides):
    validate_config(compose_train(overrides, tmp_path))


def test_gan_only_checks_leave_autoencoders_alone():
    validate_config(OmegaConf.create({"model": {"system": {}}, "trainer": {"gradient_clip_val": 1.0, "devices": 2}}))


def test_the_optimized_metric_must_have_been_logged():
    assert optimized_value({"g_loss": 0.5}, "g_loss") == 0.5
    assert optimized_value({"g_loss": 0.5}, None) is None
    with pytest.raises(ConfigError, match="quality/fid was not logged by this run .*logged: g_loss"):
        optimized_value({"g_loss": 0.5}, "quality/fid")
