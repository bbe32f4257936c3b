"""When per-step statistics are worth handing to ``self.log``.

Lightning writes ``on_step`` values to the loggers only every ``trainer.log_every_n_steps`` batches,
yet each ``self.log`` call does its bookkeeping on every batch (under cProfile, logging the six
per-step statistics took about a tenth of the default recipe's step). Values logged in between are
overwritten unread, so the modules log only on the batches Lightning writes, plus the last batch of an epoch and
of the run (a run's final ``trainer.callback_metrics`` are its last step's). The progress bar then
shows values from the latest logging step. Callbacks that need every step read the dict that
``training_step`` returns instead. ``trainer.log_every_n_steps=1`` logs every batch.
"""
from __future__ import annotations

import pytorch_lightning as pl


def logs_this_batch(trainer: pl.Trainer, optimizer_steps_pending: int = 0) -> bool:
    """Whether this training batch's ``on_step`` values are written to the loggers.

    Args:
        trainer: the running trainer.
        optimizer_steps_pending: optimizer steps this batch has still to make, to tell whether the
            run ends with it at ``trainer.max_steps``: 0 once they are done (the GAN's manual
            ``training_step`` after its updates, a callback after the batch), 1 in an automatically
            optimised ``training_step``.
    """
    if trainer.fast_dev_run or trainer.is_last_batch or trainer.should_stop:
        return True
    if trainer.max_steps > 0 and trainer.global_step + optimizer_steps_pending >= trainer.max_steps:
        return True
    connector = getattr(trainer, "_logger_connector", None)  # Lightning's own criterion, private API
    return bool(getattr(connector, "should_update_logs", True))
