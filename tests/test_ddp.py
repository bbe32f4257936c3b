"""Real DDP on the CPU: train.py trainer=ddp_cpu runs 2 gloo processes that end with identical weights."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from gan_modules.step_stats import StepStatistics
from tests.conftest import FAST, ROOT, TINY_DIGITS


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# Two processes on a 2-core machine: one torch thread each, or they spin against each other.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

class RankReport(pl.Callback):
    """Test helper: each rank writes what it saw and where it ended to <dirpath>/rank<r>.json."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.batches: list[str] = []
        self.rng = ""

    def on_train_start(self, trainer, pl_module):
        self.rng = digest([torch.get_rng_state()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(digest([batch[0]]))

    def on_train_end(self, trainer, pl_module):
        report = {
            "rank": trainer.global_rank, "world_size": trainer.world_size,
            "weights": digest(pl_module.state_dict().values()),
            "generator_steps": int(pl_module.generator_steps), "global_step": trainer.global_step,
            "batches": self.batches, "rng": self.rng,
        }
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


class PoisonRank(pl.Callback):
    """Test helper: report d_loss as NaN on the ranks of ``at_steps`` (rank -> generator step, 1-based;
    the statistics only: the weights stay finite, so no other rank sees a bad value), and write each
    rank's stop message to <dirpath>/error<r>.txt."""

    def __init__(self, at_steps: dict, dirpath: str) -> None:
        self.at_steps, self.dirpath = {int(r): int(s) for r, s in at_steps.items()}, Path(dirpath)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.generator_steps_done + 1 == self.at_steps.get(trainer.global_rank):
            step = pl_module.training_step

            def reporting_nan(*args, **kwargs):
                del pl_module.training_step  # once
                stats = step(*args, **kwargs)
                return StepStatistics({**stats, "d_loss": torch.tensor(float("nan"))}, step=stats.step)
            pl_module.training_step = reporting_nan

    def on_exception(self, trainer, pl_module, exception):
        (self.dirpath / f"error{trainer.global_rank}.txt").write_text(str(exception))


def test_every_rank_names_the_earliest_step_that_went_bad_on_any_rank(tmp_path):
    # Rank 1 reports a NaN at step 5, rank 0 at step 7 (both read in the block ending at step 8):
    # both must name step 5, rank 1 with its values.
    args = [sys.executable, "train.py", "trainer=ddp_cpu", *FAST, *TINY_DIGITS, "debug=default", "model=mlp_small",
            "max_generator_steps=12", f"hydra.run.dir={tmp_path / 'run'}", "callbacks.guards.check_every_n_steps=4",
            "callbacks.samples=null", "+callbacks.poison._target_=tests.test_ddp.PoisonRank",
            "+callbacks.poison.at_steps={0: 7, 1: 5}", f"+callbacks.poison.dirpath={tmp_path}"]
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    rank0, rank1 = ((tmp_path / f"error{r}.txt").read_text() for r in (0, 1))
    assert "Training stopped at generator step 8: generator step 5 went bad: NaN/Inf on rank 1 (DDP" in rank0
    assert "Training stopped at generator step 8: generator step 5 went bad: d_loss=nan" in rank1


def test_two_gloo_processes_train_in_lockstep(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "trainer=ddp_cpu", *FAST, *TINY_DIGITS, "debug=default", "model=mlp_small",
            "max_generator_steps=6", f"hydra.run.dir={run_dir}",
            "+callbacks.report._target_=tests.test_ddp.RankReport", f"+callbacks.report.dirpath={tmp_path}"]
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["weights"] == r1["weights"]                      # gradients were averaged: same weights
    assert r0["generator_steps"] == r1["generator_steps"] == 6  # counts are per rank, in lockstep
    assert r0["global_step"] == r1["global_step"] == 12         # n_critic + 1 optimizer steps each
    assert len(r0["batches"]) == 6 and not set(r0["batches"]) & set(r1["batches"])  # each rank its own data
    assert r0["rng"] != r1["rng"]                               # and its own noise (RankSeed)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert int(checkpoint["state_dict"]["generator_steps"]) == 6
    assert digest(checkpoint["state_dict"].values()) == r0["weights"]


def test_progressive_growing_counts_the_images_of_every_rank(tmp_path):
    # 4x4 at 16 per rank (32 images a step) for 320 images, then 8x8 at 8 per rank for 480: 10 + 30 steps
    run_dir = tmp_path / "run"
    tiny = ["model=progan", "model.generator.z_dim=8", "model.generator.channel_base=32", "model.generator.max_channels=8",
            "model.discriminator.channel_base=32", "model.discriminator.max_channels=8"]
    grow = ["callbacks=progressive", "callbacks.samples=null", "callbacks.training_plots=null", "trainer.max_epochs=-1",
            "trainer.reload_dataloaders_every_n_epochs=1", "callbacks.progressive.fade_in_images=320",
            "callbacks.progressive.stabilize_images={4: 320, 8: 160}", "callbacks.progressive.batch_sizes={4: 16, 8: 8}"]
    args = [sys.executable, "train.py", "trainer=ddp_cpu", *FAST, "dataset=digits", *tiny, *grow, f"hydra.run.dir={run_dir}"]
    result = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["ProgressiveGrowing"]["images_seen"] == 800
    assert int(ckpt["state_dict"]["generator_steps"]) == 40 and int(ckpt["state_dict"]["generator.stage"]) == 1
