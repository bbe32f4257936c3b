"""Shared helpers: compose the project's Hydra config the way train.py does."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from gan_modules.config import CONF_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR

# Small, fast settings on the CPU for runs inside the tests (8x8 digits ship with scikit-learn).
FAST = ["trainer.accelerator=cpu", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
TINY_DIGITS = ["dataset=digits", "dataset.batch_size=16"]


@pytest.fixture(autouse=True, scope="session")
def real_statistics_cache_in_a_temporary_folder(tmp_path_factory):
    """evaluate.py and the quality callback cache real images' features; the tests (and the
    processes they start) keep that cache out of the user's ~/.cache."""
    from gan_modules.metrics.real_stats import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    cfg = compose_config(overrides, config_name)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
