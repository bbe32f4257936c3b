"""Shared helpers: compose the project's Hydra config the way train.py does."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from gan_modules.config import CONF_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR

# Small, fast settings on the CPU for runs inside the tests (8x8 digits ship with scikit-learn).
FAST = ["trainer.accelerator=cpu", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
TINY_DIGITS = ["dataset=digits", "dataset.batch_size=16"]


def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    cfg = compose_config(overrides, config_name)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
