"""Nothing a run already has is lost: run-folder lock, resume choice, metrics history, config re-applied."""
import csv
import errno
import os
import subprocess
import sys

import pytest
import torch

from gan_modules.atomic_files import DiskFullError, atomic_write_bytes
from gan_modules.resume_settings import ResumeConfigError, apply_configured_hyperparameters
from gan_modules.run_folder import LOCK_NAME, RunFolderError, acquire_lock, release_lock
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train

QUIET = [*FAST, *TINY_DIGITS, "model=mlp_small", "callbacks.samples=null", "trainer.log_every_n_steps=1"]


def run(tmp_path, *overrides):
    return train(compose_train([*QUIET, *overrides], tmp_path))


def metrics_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def saved_step(path):
    return int(torch.load(path, weights_only=True)["state_dict"]["generator_steps"])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ckpt"))}


# --- a fresh run or an earlier start never overwrites later checkpoints ----------------------------
def test_a_new_run_into_a_used_folder_is_refused_before_it_writes_anything(tmp_path):
    run(tmp_path, "max_generator_steps=3")
    before, config = snapshot(tmp_path / "checkpoints"), (tmp_path / "config.yaml").read_text()
    with pytest.raises(RunFolderError, match="(?s)last.ckpt: step 3.*ckpt_path=auto.*overwrite=true"):
        run(tmp_path, "max_generator_steps=2", "seed=7")
    assert snapshot(tmp_path / "checkpoints") == before
    assert (tmp_path / "config.yaml").read_text() == config
    assert not (tmp_path / LOCK_NAME).exists()  # released after the refusal


def test_overwrite_true_starts_over_and_replaces_the_old_checkpoints(tmp_path):
    run(tmp_path, "max_generator_steps=3")
    run(tmp_path, "max_generator_steps=2", "overwrite=true")
    assert saved_step(tmp_path / "checkpoints" / "last.ckpt") == 2
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["callbacks"]["TrainingPlots"]["history"]["step"] == [1.0, 2.0]


def test_auto_without_last_ckpt_resumes_from_the_latest_epoch_checkpoint(tmp_path):
    run(tmp_path, "trainer.max_epochs=2")
    folder = tmp_path / "checkpoints"
    per_epoch = saved_step(folder / "epoch000.ckpt")
    (folder / "last.ckpt").unlink()
    first_epoch = (folder / "epoch000.ckpt").read_bytes()
    metrics = run(tmp_path, "trainer.max_epochs=3", "ckpt_path=auto")
    assert metrics["generator_steps"] == 3 * per_epoch  # continued, not restarted
    assert (folder / "epoch000.ckpt").read_bytes() == first_epoch
    assert saved_step(folder / "epoch002.ckpt") == 3 * per_epoch


def test_auto_skips_an_unreadable_checkpoint_and_refuses_when_none_is_readable(tmp_path):
    run(tmp_path, "trainer.max_epochs=1")
    folder = tmp_path / "checkpoints"
    (folder / "last.ckpt").write_bytes(b"")
    assert run(tmp_path, "trainer.max_epochs=2", "ckpt_path=auto")["generator_steps"] == 2 * saved_step(
        folder / "epoch000.ckpt")
    for path in folder.glob("*.ckpt"):
        path.write_text("not a checkpoint")
    with pytest.raises(RunFolderError, match="(?s)no checkpoint .* can be read.*epoch000.ckpt: unreadable"):
        run(tmp_path, "trainer.max_epochs=3", "ckpt_path=auto")


def test_resuming_from_an_earlier_checkpoint_needs_overwrite(tmp_path):
    run(tmp_path, "trainer.max_epochs=2", "trainer.log_every_n_steps=1")
    folder = tmp_path / "checkpoints"
    later = snapshot(folder)
    with pytest.raises(RunFolderError, match="(?s)epoch001.ckpt: step .*last.ckpt: step"):
        run(tmp_path, "trainer.max_epochs=2", f"ckpt_path={folder / 'epoch000.ckpt'}")
    assert snapshot(folder) == later
    rows_before = metrics_rows(tmp_path)
    resume_step = saved_step(folder / "epoch000.ckpt")
    run(tmp_path, "trainer.max_epochs=2", f"ckpt_path={folder / 'epoch000.ckpt'}", "overwrite=true")
    # The rows logged after epoch 0 by the first run are kept beside metrics.csv, not deleted.
    side = list((tmp_path / "csv").glob("metrics.replaced_*.csv"))
    assert len(side) == 1
    with open(side[0], newline="") as handle:
        moved = list(csv.DictReader(handle))
    assert [r["step"] for r in moved] == [r["step"] for r in rows_before if int(r["step"]) >= resume_step]
    steps = [int(r["step"]) for r in metrics_rows(tmp_path)]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 2 * resume_step - 1


# --- metrics.csv keeps its history ----------------------------------------------------------------
def test_a_resumed_run_appends_to_metrics_csv(tmp_path):
    run(tmp_path, "trainer.max_epochs=1")
    before = metrics_rows(tmp_path)
    run(tmp_path, "trainer.max_epochs=2", "ckpt_path=auto")
    after = metrics_rows(tmp_path)
    assert after[: len(before)] == before  # the first run's rows, unchanged
    steps = [int(r["step"]) for r in after]
    assert steps == list(range(len(after))) and len(after) == 2 * len(before)
    assert not list((tmp_path / "csv").glob("metrics.replaced_*.csv"))


# --- the config given on resume is what runs ------------------------------------------------------
def test_a_changed_learning_rate_applies_on_resume(tmp_path):
    run(tmp_path, "max_generator_steps=2")
    run(tmp_path, "max_generator_steps=4", "ckpt_path=auto", "model.optimizer.d.lr=1e-5", "model.optimizer.g.betas=[0.0,0.9]")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    g_group, d_group = (s["param_groups"][0] for s in state["optimizer_states"])
    assert d_group["lr"] == pytest.approx(1e-5)
    assert tuple(g_group["betas"]) == (0.0, 0.9)
    assert state["run_config"]["model"]["optimizer"]["d"]["lr"] == pytest.approx(1e-5)


def test_another_optimizer_on_resume_is_refused(tmp_path):
    run(tmp_path, "max_generator_steps=2")
    with pytest.raises(ResumeConfigError, match="model.optimizer.g builds RMSprop"):
        run(tmp_path, "max_generator_steps=3", "ckpt_path=auto", "optimizer=rmsprop")


def test_a_new_learning_rate_under_a_scheduler_rescales_the_schedule():
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([parameter], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step()
    scheduler.step()  # the schedule has halved the rate
    changes = apply_configured_hyperparameters(
        "model.optimizer.g", lambda params: torch.optim.Adam(params, lr=4e-3), optimizer, scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert scheduler.base_lrs == [4e-3] and len(changes) == 1
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


COSINE = "{_target_:torch.optim.lr_scheduler.CosineAnnealingLR,_partial_:true,T_max:6}"


def test_a_step_interval_schedule_resumes_where_it_was(tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    schedule = [f"model.scheduler.g={COSINE}", "model.scheduler_interval=step"]
    run(whole, *schedule, "max_generator_steps=4")
    run(halves, *schedule, "max_generator_steps=2")
    run(halves, *schedule, "max_generator_steps=4", "ckpt_path=auto")
    rates = []
    for folder in (whole, halves):
        state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        assert state["lr_schedulers"][0]["last_epoch"] == 4  # generator steps, across the resume
        rates.append(state["optimizer_states"][0]["param_groups"][0]["lr"])
    assert rates[0] == pytest.approx(rates[1]) and rates[0] < 1e-3


def test_resuming_a_schedule_under_the_other_interval_is_refused(tmp_path):
    run(tmp_path, f"model.scheduler.g={COSINE}", "max_generator_steps=2")
    before = snapshot(tmp_path / "checkpoints")
    with pytest.raises(ResumeConfigError, match="scheduler_interval=epoch: its schedulers have counted epochs"):
        run(tmp_path, f"model.scheduler.g={COSINE}", "model.scheduler_interval=step", "max_generator_steps=3",
            "ckpt_path=auto")
    assert snapshot(tmp_path / "checkpoints") == before


def test_switching_the_ema_on_at_resume_starts_it_from_the_generator(tmp_path):
    run(tmp_path, "max_generator_steps=2")
    run(tmp_path, "max_generator_steps=3", "ckpt_path=auto", "model.ema_decay=0.9")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("generator_ema.") for k in state)


def test_another_models_checkpoint_is_refused_before_anything_is_written(tmp_path):
    other = tmp_path / "other"
    run(other, "max_generator_steps=2")
    target = tmp_path / "target"
    with pytest.raises(ResumeConfigError, match="another model.*generator"):
        train(compose_train([*FAST, *TINY_DIGITS, "model=mlp_gan", "max_generator_steps=3",
                             f"ckpt_path={other / 'checkpoints' / 'last.ckpt'}"], target))
    assert not (target / "config.yaml").exists() and not (target / "checkpoints").exists()


def test_too_few_epochs_for_the_checkpoint_is_refused_before_anything_is_written(tmp_path):
    run(tmp_path, "trainer.max_epochs=2")
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ResumeConfigError, match="trainer.max_epochs=1 ends before it"):
        run(tmp_path, "trainer.max_epochs=1", "ckpt_path=auto")
    assert (tmp_path / "config.yaml").read_text() == config


# --- one run per folder, leftovers cleaned -------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f'{{"pid": {holder.pid}, "host": "{os.uname().nodename}", "started": "x"}}')
        with pytest.raises(RunFolderError, match=f"process {holder.pid} on this machine"):
            run(tmp_path, "max_generator_steps=1")
        assert not (tmp_path / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone: the lock is stale and taken over.
    run(tmp_path, "max_generator_steps=1")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 1, "host": "some-other-node", "started": "x"}')
    with pytest.raises(RunFolderError, match="some-other-node.*delete"):
        acquire_lock(tmp_path)


def test_the_lock_holds_pid_and_host_and_is_released(tmp_path):
    lock = acquire_lock(tmp_path)
    text = lock.read_text()
    assert str(os.getpid()) in text and os.uname().nodename in text
    with pytest.raises(RunFolderError):
        acquire_lock(tmp_path)
    release_lock(lock)
    assert not lock.exists()


def test_temp_files_of_a_killed_save_are_removed_at_the_next_start(tmp_path):
    run(tmp_path, "max_generator_steps=1")
    leftover = tmp_path / "checkpoints" / ".last.ckpt.x1y2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    run(tmp_path, "max_generator_steps=2", "ckpt_path=auto")
    assert not leftover.exists()


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the good checkpoint")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=f"disk holding {tmp_path} is full.*previous content is intact"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"the good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# --- as a user sees it ---------------------------------------------------------------------------
def test_train_py_reports_a_user_error_in_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("hello")
    result = subprocess.run([sys.executable, "train.py", *QUIET, "max_generator_steps=1", "ckpt_path=auto",
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "train.py: error: ckpt_path=auto: no checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_paths_are_anchored_to_the_project_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_train([])
    assert cfg.paths.log_dir == str(ROOT / "logs") and cfg.dataset.data_dir == str(ROOT / "data")


def test_loggers_are_finished_when_training_fails(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    import gan_modules.training as training

    finished = []
    monkeypatch.setattr(training, "finish_loggers", lambda loggers: finished.append(len(loggers)))

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pl.Trainer, "fit", crash)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path, "max_generator_steps=1")
    assert finished == [1]
    assert not (tmp_path / LOCK_NAME).exists()


def test_last_ckpt_holds_the_final_step_when_the_schedule_does_not_fall_on_it(tmp_path):
    # saves every 2 generator steps (4 optimizer steps), the run ends at 5: Lightning alone leaves
    # last.ckpt at step 4 and the fifth step is lost
    schedule = ["callbacks.model_checkpoint.every_n_epochs=null", "+callbacks.model_checkpoint.every_n_train_steps=4",
                "callbacks.model_checkpoint.filename='step{step:04d}'", "max_generator_steps=5"]
    run(tmp_path, *schedule)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(saved_step(p) for p in checkpoints.glob("step*.ckpt")) == [2, 4]
    assert saved_step(checkpoints / "last.ckpt") == 5
