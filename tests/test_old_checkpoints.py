"""Checkpoints written before the objective refactor (tests/golden/checkpoints, README there) still
sample in generate.py and still resume under today's configs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gan_modules.training import train
from generate import main as generate_main
from tests.conftest import FAST, compose_train

OLD = Path(__file__).resolve().parent / "golden" / "checkpoints"
SMALL_DIGITS = ["dataset=digits", "dataset.batch_size=16", "seed=0"]
# Today's command for the config each checkpoint was trained with.
TODAY = {
    "cgan_dcgan_acgan": ["model=cgan_dcgan_acgan", "model.generator.backbone.base_channels=8",
                         "model.discriminator.backbone.base_channels=8", "model.generator.backbone.z_dim=8"],
    "vae": ["model=vae", "model.network.hidden=[16]"],
    "wgan_gp": ["model=dcgan", "experiment=wgan_gp", "model.discriminator.norm=layer", "model.generator.base_channels=8",
                "model.discriminator.base_channels=8", "model.generator.z_dim=8", "model.ema_decay=0.99"],
}


@pytest.mark.parametrize("name", sorted(TODAY))
def test_an_old_checkpoint_still_samples(name, tmp_path):
    out = generate_main([f"checkpoint={OLD / f'{name}.ckpt'}", "num_samples=6", f"output={tmp_path / 's.npz'}"])
    samples = np.load(out)["arr_0"]
    assert samples.shape[0] == 6 and samples.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(TODAY))
def test_an_old_checkpoint_still_resumes(name, tmp_path):
    checkpoint = tmp_path / "old.ckpt"
    shutil.copy(OLD / f"{name}.ckpt", checkpoint)
    cfg = compose_train([*FAST, *SMALL_DIGITS, *TODAY[name], "trainer.max_epochs=2", f"ckpt_path={checkpoint}",
                         "callbacks.samples=null", "callbacks.training_plots=null"], tmp_path / "run")
    train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "epoch001.ckpt").is_file()  # the second epoch ran
