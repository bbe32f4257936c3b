"""Counting training steps: generator steps, optimizer steps and batches, and when to log.

Three counters are in play. Lightning's ``trainer.global_step`` counts *optimizer* steps: a GAN
makes ``n_critic + 1`` of them per batch (manual optimisation), an autoencoder one. Lightning's
loggers and ``trainer.log_every_n_steps`` count *batches*. And the user counts *generator steps*
(``max_generator_steps``, sample grids, plots), which for a GAN are batches and for an autoencoder
are optimizer steps. Each module says how many optimizer steps one batch makes
(``optimizer_steps_per_batch``); the functions here convert between the counters.

When per-step statistics are worth handing to ``self.log``:
Lightning writes ``on_step`` values to the loggers only every ``trainer.log_every_n_steps`` batches,
yet each ``self.log`` call does its bookkeeping on every batch, which is not free next to a small
network's step. Values logged in between are overwritten unread, so the modules log only on the
batches Lightning writes, plus the last batch of an epoch and of the run (a run's final
``trainer.callback_metrics`` are its last step's). The progress bar then shows values from the
latest logging step. Callbacks that need every step read what ``training_step`` returns instead,
in blocks (``gan_modules/step_stats.py``). ``trainer.log_every_n_steps=1`` logs every batch.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def optimizer_steps_per_batch(module: Any) -> int:
    """How many optimizer steps Lightning's global_step gains per training batch (1 without a module)."""
    return int(getattr(module, "optimizer_steps_per_batch", 1)) if module is not None else 1


def training_steps(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> int:
    """Generator steps for a GAN (Lightning's global_step counts D steps too); batches for an autoencoder."""
    counted = getattr(pl_module, "generator_steps_done", None)  # kept on the host: no device sync
    if counted is not None:
        return int(counted)
    steps = getattr(pl_module, "generator_steps", None)
    if steps is not None:
        return int(steps)
    return int(trainer.global_step) if trainer is not None else 0


def trainer_length(max_generator_steps: int | None, module: Any) -> dict[str, Any]:
    """The Trainer arguments that stop a run after ``max_generator_steps`` (none when it is None).

    Lightning's ``max_steps`` counts optimizer steps, so each generator step is worth the module's
    ``optimizer_steps_per_batch`` of them (a GAN's discriminator steps count too).
    """
    if max_generator_steps is None:
        return {}
    if int(max_generator_steps) < 1:
        raise ValueError(f"max_generator_steps must be a positive integer or null, got {max_generator_steps}.")
    return {"max_steps": int(max_generator_steps) * optimizer_steps_per_batch(module), "max_epochs": -1}


def logs_this_batch(trainer: pl.Trainer, optimizer_steps_pending: int = 0) -> bool:
    """Whether this training batch's ``on_step`` values are written to the loggers.

    Args:
        trainer: the running trainer.
        optimizer_steps_pending: optimizer steps this batch has still to make, so that the batch is
            counted the same before and after its updates: 0 once they are done (the GAN's manual
            ``training_step`` after its updates, a callback after the batch), 1 in an automatically
            optimised ``training_step``.
    """
    if trainer.fast_dev_run or trainer.is_last_batch or trainer.should_stop:
        return True
    if trainer.max_steps > 0 and trainer.global_step + optimizer_steps_pending >= trainer.max_steps:
        return True
    if trainer.log_every_n_steps == 0:
        return False
    # Lightning's own criterion (LoggerConnector.should_update_logs) counts the batches that made an
    # optimizer step, in a private counter (fit_loop.epoch_loop._batches_that_stepped, + 1 for the
    # batch in progress). The same count from public attributes: optimizer steps made or pending,
    # over the steps one batch makes. A batch skipped to end an epoch early makes no step and is
    # not counted by either; the batch count of fit_loop.epoch_loop.batch_progress would count it.
    per_batch = optimizer_steps_per_batch(trainer.lightning_module)
    batch_number = -(-(trainer.global_step + optimizer_steps_pending) // per_batch)  # rounded up
    return batch_number % trainer.log_every_n_steps == 0
