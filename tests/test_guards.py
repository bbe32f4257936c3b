"""NaN/Inf guard (stop keeps last.ckpt good, skip restores the step) and the collapse/divergence watch."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from gan_modules.callbacks.guards import (
    CollapseWatch,
    NonFiniteGuard,
    NonFiniteTrainingError,
    TrainingHealthWarning,
    nonfinite_values,
)
from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

# 1437 training digits at batch 64 (drop_last): 22 generator steps per epoch, so epoch000.ckpt and
# last.ckpt are written at step 22.
STEPS_PER_EPOCH = 22
SMALL = FAST + TINY_DIGITS + ["dataset.batch_size=64", "model=mlp_small", "callbacks.samples=null",
                              "callbacks.training_plots=null", "logger=csv"]


class PoisonBatch(pl.Callback):
    """Test helper: fill the real batch with NaN at the given generator step (1-based)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if int(pl_module.generator_steps) + 1 == self.at_step:
            batch[0].fill_(float("nan"))


def poisoned(at_step: int) -> list[str]:
    return ["+callbacks.poison._target_=tests.test_guards.PoisonBatch", f"+callbacks.poison.at_step={at_step}"]


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_stops_with_message_and_last_ckpt_keeps_the_last_good_state(tmp_path):
    cfg = compose_train(SMALL + poisoned(STEPS_PER_EPOCH + 5) + ["trainer.max_epochs=3"], tmp_path)
    with pytest.raises(NonFiniteTrainingError) as info:
        train(cfg)
    message = str(info.value)
    assert f"generator step {STEPS_PER_EPOCH + 5}" in message and "d_loss=nan" in message
    assert "learning rate" in message and "model.optimizer.d.lr=0.001" in message and "bf16" in message
    assert "last.ckpt" in message and "callbacks.guards.on_nan=skip" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert int(checkpoint["state_dict"]["generator_steps"]) == STEPS_PER_EPOCH  # from before the bad step
    assert finite(checkpoint["state_dict"])
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["epoch000.ckpt", "last.ckpt"]


def test_huge_learning_rate_stops_before_any_bad_checkpoint(tmp_path):
    cfg = compose_train(SMALL + ["model.optimizer.d.lr=1e30", "model.optimizer.g.lr=1e30", "max_generator_steps=50"], tmp_path)
    with pytest.raises(NonFiniteTrainingError) as info:
        train(cfg)
    message = str(info.value)
    assert "Training stopped at generator step" in message and "model.optimizer.d.lr=1e+30" in message
    assert "No checkpoint had been written yet" in message
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


def test_skip_restores_the_step_and_training_goes_on(tmp_path):
    cfg = compose_train(SMALL + poisoned(4) + ["callbacks.guards.on_nan=skip", "max_generator_steps=8"], tmp_path)
    with pytest.warns(TrainingHealthWarning, match="Generator step 4: .*d_loss=nan.*skipped"):
        train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(checkpoint["state_dict"]["generator_steps"]) == 8  # the skipped step still counts
    assert finite(checkpoint["state_dict"])
    guard_state = next(v for k, v in checkpoint["callbacks"].items() if "NonFiniteGuard" in k)
    assert guard_state == {"skipped_steps": 1}


def test_skip_gives_up_after_max_skips(tmp_path):
    cfg = compose_train(SMALL + ["model.optimizer.d.lr=1e30", "model.optimizer.g.lr=1e30", "max_generator_steps=20",
                                 "callbacks.guards.on_nan=skip", "callbacks.guards.max_skips=2"], tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingHealthWarning)
        with pytest.raises(NonFiniteTrainingError, match="2 consecutive steps were skipped"):
            train(cfg)


def test_skip_puts_back_exactly_the_state_before_the_step():
    module = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.randn(4, 3)).sum().backward()
    opt.step()

    class FakeTrainer:
        optimizers = [opt]

    guard = NonFiniteGuard(on_nan="skip")
    guard.on_train_batch_start(FakeTrainer, module, None, 0)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    exp_avg = opt.state[module.weight]["exp_avg"].clone()
    module.weight.grad.fill_(float("nan"))
    opt.step()
    assert not torch.isfinite(module.weight).all()
    guard._restore(FakeTrainer, module)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert torch.equal(opt.state[module.weight]["exp_avg"], exp_avg)


def test_skip_keeps_a_scheduled_rate_because_the_step_still_counts():
    module = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    class FakeTrainer:
        optimizers = [opt]

    guard = NonFiniteGuard(on_nan="skip")
    guard.on_train_batch_start(FakeTrainer, module, None, 0)
    module(torch.randn(4, 3)).sum().backward()
    module.weight.grad.fill_(float("nan"))
    opt.step()
    scheduler.step()  # model.scheduler_interval=step: inside the training step
    guard._restore(FakeTrainer, module)
    assert torch.isfinite(module.weight).all() and scheduler.last_epoch == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) == scheduler.get_last_lr()[0]


def test_guard_refuses_to_write_a_checkpoint_of_nan_weights():
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.bias[0] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match=r"weights became NaN/Inf \(bias\) \(caught as a checkpoint.*it was not written"):
        NonFiniteGuard().on_save_checkpoint(None, module, {})


def test_nonfinite_values_reads_floats_and_scalar_tensors():
    assert nonfinite_values({"d_loss": 0.5, "g_loss": float("inf"), "x": torch.tensor(float("nan"))}) == {
        "g_loss": math.inf, "x": pytest.approx(float("nan"), nan_ok=True)}
    assert nonfinite_values(None) == {}
    with pytest.raises(ValueError, match="on_nan"):
        NonFiniteGuard(on_nan="ignore")


# --- collapse / divergence watch on synthetic metric streams ----------------------------------
def stream(watch: CollapseWatch, rows: list[dict], start: int = 1) -> list[str]:
    raised = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, row in enumerate(rows, start):
            raised += watch.observe(i, row)
    assert [str(w.message) for w in caught if w.category is TrainingHealthWarning] == raised
    return raised


def test_watch_warns_once_when_d_wins_for_patience_steps_and_rearms():
    watch = CollapseWatch(patience=50, d_acc_threshold=0.99, g_loss_max=None, g_loss_growth=None)
    healthy = {"d_acc_real": 0.7, "d_acc_fake": 0.6, "g_loss": 1.0}
    won = {"d_acc_real": 1.0, "d_acc_fake": 0.995, "g_loss": 6.0}
    assert stream(watch, [healthy] * 100 + [won] * 49) == []
    raised = stream(watch, [won] * 60, start=150)
    assert len(raised) == 1 and "(generator steps 101-150;" in raised[0]
    assert "d_acc_real=1.000" in raised[0] and "d_acc_fake=0.995" in raised[0] and "50 generator steps" in raised[0]
    assert stream(watch, [healthy] + [won] * 50, start=300) != []  # a new episode warns again


def test_watch_warns_when_g_loss_stays_high_or_explodes():
    watch = CollapseWatch(patience=20, g_loss_max=20.0, g_loss_growth=10.0)
    early = [{"g_loss": 0.8 + 0.01 * (i % 5)} for i in range(40)]
    assert stream(watch, early) == []
    assert watch.g_loss_reference == 1.0  # the median is below the floor of 1
    raised = stream(watch, [{"g_loss": 30.0}] * 25, start=41)
    assert len(raised) == 2
    assert any("stayed above 20" in m and "mean 30" in m for m in raised)
    assert any("10x its early level" in m for m in raised)
    # a short spike is not a trend
    watch = CollapseWatch(patience=20)
    assert stream(watch, early + [{"g_loss": 50.0}] * 19 + early) == []


def test_watch_ignores_the_level_of_unbounded_critic_losses():
    watch = CollapseWatch(patience=5)

    class Module:
        loss = type("Loss", (), {"kind": "wasserstein"})()

    watch.on_train_start(None, Module())
    assert stream(watch, [{"g_loss": 1000.0 * i} for i in range(1, 30)]) == []
