"""Exact resume: a run killed with SIGKILL and resumed from last.ckpt ends bit-identical to a run that
was never stopped (weights, optimizers, counters, random generators and so data order and noise)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import FAST, ROOT

# 1437 training digits at batch 32: 44 generator steps per epoch; three epochs take a few seconds.
STEPS = 44
ARGS = [*FAST, "dataset=digits", "dataset.batch_size=32", "model=mlp_small", "trainer.max_epochs=3",
        "callbacks.samples=null", "callbacks.training_plots=null", "logger=csv"]


# One torch thread per process: tiny networks gain nothing from more, and the test runs beside others.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_cmd(run_dir, *extra) -> list[str]:
    return [sys.executable, "train.py", *ARGS, f"hydra.run.dir={run_dir}", *extra]


def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"  # appears whole (atomic save) at the end of the first epoch
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "training finished before it could be killed"
    stopped_at = int(torch.load(last, weights_only=True)["state_dict"]["generator_steps"])
    assert stopped_at in (STEPS, 2 * STEPS)  # an epoch end, before the last one

    resumed = subprocess.run(train_cmd(killed, "ckpt_path=auto"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = subprocess.run(train_cmd(whole), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(a["state_dict"]["generator_steps"]) == int(b["state_dict"]["generator_steps"]) == 3 * STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        for key, state in opt_a["state"].items():
            assert all(torch.equal(state[n], opt_b["state"][key][n]) for n in state)
