"""Lightning's ModelCheckpoint, with last.ckpt always holding the state a finished run ended in.

Lightning saves ``last.ckpt`` only together with a scheduled checkpoint (every N epochs or N steps),
and at the end of training only if it never saved one. A run whose schedule does not fall on its
final step (``every_n_epochs: 64``, ``every_n_train_steps: 10000`` and a ``max_generator_steps``
between two of them) therefore ended with a ``last.ckpt`` of an earlier step: the steps after it
were lost, and evaluate.py scored the older generator under the run's name.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """``pytorch_lightning.callbacks.ModelCheckpoint`` that also writes ``last.ckpt`` when training
    ends (``save_last``) at a step it has not saved yet.

    The class keeps Lightning's name, so the callback state in checkpoints written with Lightning's
    class (the key is built from the class name and its settings) is restored as before.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)
