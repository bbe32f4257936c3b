"""Shared helpers: compose the project's Hydra config the way train.py does."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small, fast settings on the CPU for runs inside the tests (8x8 digits ship with scikit-learn).
FAST = ["trainer.accelerator=cpu", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
TINY_DIGITS = ["dataset=digits", "dataset.batch_size=16"]


def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def train_cfg(tmp_path):
    """compose_train with the run folder inside tmp_path."""

    def make(overrides: list[str]) -> DictConfig:
        return compose_train(overrides, tmp_path / "run")

    return make
