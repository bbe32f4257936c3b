"""A progress bar that counts generator steps.

Lightning's bar counts training batches, but when a run is limited by ``trainer.max_steps`` (which
``max_generator_steps`` sets) it caps the bar's total by the remaining *optimizer* steps. A GAN makes
``n_critic + 1`` optimizer steps per batch, so a 50-step run ended showing 50/100. Here the cap is
converted back into batches: one batch is one generator step for a GAN, and one optimizer step for
an autoencoder, so the bar ends at N/N either way.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from gan_modules.steps import optimizer_steps_per_batch


class GeneratorStepProgressBar(TQDMProgressBar):
    """:class:`TQDMProgressBar` whose training total is in batches (generator steps) also when the run
    stops at ``trainer.max_steps``."""

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
