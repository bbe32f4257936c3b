"""Store the resolved run config in every checkpoint, so a checkpoint alone rebuilds its model."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

CONFIG_KEY = "run_config"


class RunConfigInCheckpoint(pl.Callback):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
