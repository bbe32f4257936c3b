"""Atomic checkpoint saves: a failure or a SIGKILL during a save leaves the previous last.ckpt intact."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from gan_modules import checkpoint_io
from gan_modules.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train

SMALL = FAST + TINY_DIGITS + ["dataset.batch_size=64", "model=mlp_small", "callbacks.samples=null",
                              "callbacks.training_plots=null", "logger=csv"]


def half_write_then_fail(obj, handle, *args, **kwargs):
    handle.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    monkeypatch.setattr(checkpoint_io.torch, "save", half_write_then_fail)
    with pytest.raises(OSError, match="simulated"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_save_goes_through_a_temp_file_in_the_same_folder_and_a_rename(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((os.path.dirname(src), os.path.basename(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_io.os, "replace", spy)
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "sub" / "last.ckpt")
    (folder, temp_name, target), = renames
    assert folder == str(tmp_path / "sub") and temp_name.startswith(".last.ckpt.") and temp_name.endswith(".tmp")
    assert target == str(tmp_path / "sub" / "last.ckpt")
    assert torch.equal(torch.load(tmp_path / "sub" / "last.ckpt")["w"], torch.ones(3))


def test_training_uses_it_and_a_failing_save_keeps_last_ckpt_loadable(tmp_path, monkeypatch):
    saved = []
    real_save = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", lambda self, c, path, **kw: saved.append(path) or real_save(self, c, path, **kw))
    cfg = compose_train(SMALL + ["trainer.max_epochs=1"], tmp_path)
    train(cfg)
    assert sorted(os.path.basename(p) for p in saved) == ["epoch000.ckpt", "last.ckpt"]  # the trainer config's plugin
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    assert int(torch.load(last, weights_only=False)["state_dict"]["generator_steps"]) == 22
    # resume for a second epoch, and let the end-of-epoch save die half way through
    monkeypatch.setattr(checkpoint_io.torch, "save", half_write_then_fail)
    cfg = compose_train(SMALL + ["trainer.max_epochs=2", "ckpt_path=auto"], tmp_path)
    with pytest.raises(OSError, match="simulated"):
        train(cfg)
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*.tmp"))


KILLED_WRITER = textwrap.dedent("""
    import sys, torch
    from gan_modules.checkpoint_io import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"step": step, "w": torch.full((4_000_000,), float(step))}, path)
        print(step, flush=True)
""")


def test_sigkill_during_saves_never_leaves_a_corrupt_file(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete save exists
        time.sleep(0.7)  # several 16 MB saves later, most likely in the middle of one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    checkpoint = torch.load(path)
    assert checkpoint["step"] >= 1 and bool((checkpoint["w"] == float(checkpoint["step"])).all())
