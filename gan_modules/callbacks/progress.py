"""A progress bar that counts generator steps.

Lightning's bar counts training batches, but when a run is limited by ``trainer.max_steps`` (which
``max_generator_steps`` sets) it caps the bar's total by the remaining *optimizer* steps. A GAN makes
``n_critic + 1`` optimizer steps per batch, so a 50-step run ended showing 50/100. Here the cap is
converted back into batches: one batch is one generator step for a GAN, and one optimizer step for
an autoencoder, so the bar ends at N/N either way.

The logged values it shows are read from the device (a host sync) only once per logging interval
(``trainer.log_every_n_steps``), the only steps on which they change, not on every refresh.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from gan_modules.steps import optimizer_steps_per_batch


class GeneratorStepProgressBar(TQDMProgressBar):
    """:class:`TQDMProgressBar` whose training total is in batches (generator steps) also when the run
    stops at ``trainer.max_steps``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown_interval: int | None = None
        self._shown: dict[str, Any] = {}

    @property
    def total_train_batches(self) -> int | float:
        trainer: pl.Trainer = self.trainer
        batches = trainer.num_training_batches
        max_steps = trainer.max_steps
        if trainer.max_epochs == -1 and max_steps is not None and max_steps > 0:
            per_batch = optimizer_steps_per_batch(trainer.lightning_module)
            remaining = -(-(max_steps - trainer.global_step) // per_batch)  # batches still to run, rounded up
            return min(batches, max(remaining, 0))
        return batches

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if not trainer.training or trainer.log_every_n_steps < 1:
            return super().get_metrics(trainer, pl_module)
        per_batch = optimizer_steps_per_batch(trainer.lightning_module)
        batches = -(-trainer.global_step // per_batch)
        # Values logged on batch k * log_every_n_steps are first seen by the callbacks of the next batch.
        interval = (batches - 1) // trainer.log_every_n_steps
        if self._shown_interval != interval:
            self._shown_interval = interval
            self._shown = super().get_metrics(trainer, pl_module)
        return self._shown

    # Values logged outside the training steps' rhythm (an epoch's last batch, validation) are shown
    # at the next refresh.
    def _forget_shown(self) -> None:
        self._shown_interval = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._forget_shown()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._forget_shown()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._forget_shown()
