"""Training guards: stop (or skip) on NaN/Inf before a bad state reaches a checkpoint, and warn on
discriminator collapse or generator-loss divergence.

``NonFiniteGuard`` checks the floats every training step returned (``d_loss``, ``g_loss``, ...),
and the module's floating-point weights and buffers before every checkpoint. The figures stay on
the device and are read in blocks, every ``check_every_n_steps`` generator steps (one transfer,
no per-step host sync; see ``gan_modules/step_stats.py``), on the steps where a sample or quality
callback uses the model, before each checkpoint and at the end; the message names the first bad
step exactly. On a NaN or Inf:

* ``on_nan: stop`` (default) raises :class:`NonFiniteTrainingError`, whose message names the
  generator step, the offending values and the likely causes. Lightning runs callbacks before its
  ``ModelCheckpoint`` callbacks in every hook, and the guard reads the unread steps whenever a
  checkpoint is being assembled, so the bad step is caught before any checkpoint of it is written;
  an exception (unlike ``trainer.should_stop``) also skips the end-of-epoch and
  end-of-training saves: ``checkpoints/last.ckpt`` keeps the last good state. As a second line, the
  guard also checks the weights whenever a checkpoint is about to be written and refuses to write a
  non-finite one.
* ``on_nan: skip`` takes an in-memory copy of the module's weights and buffers and of every
  optimizer's state before each step and restores it when the step went bad, so the bad batch leaves
  no trace (the step still counts: ``generator_steps`` and Lightning's step budget move on, and
  ``skipped_steps`` in the callback's state says how many were thrown away). The copy costs one
  extra set of weights and optimizer moments in memory plus a device-side copy per step, and the
  decision needs a host read every step: small for the models here, noticeable for large ones and
  on a GPU, so ``stop`` is the default. After ``max_skips``
  consecutive bad steps it stops as ``stop`` would: skipping cannot fix a diverged setup.

Under DDP the decision is reduced across ranks (any bad rank counts), so all ranks stop or restore
together instead of one rank hanging in the next collective.

``CollapseWatch`` warns (``warnings.warn`` with :class:`TrainingHealthWarning`, and the log) when D's
accuracy on both real and fake stays above a threshold for ``patience`` generator steps (D has won;
G's gradient vanishes and samples usually collapse), or when ``g_loss`` stays above ``g_loss_max`` or
above ``g_loss_growth`` times its early level for ``patience`` steps. It never stops training.
"""
from __future__ import annotations

import copy
import logging
import math
import statistics
import warnings
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from gan_modules.step_stats import DEFAULT_READ_EVERY_N_STEPS, PendingSteps
from gan_modules.steps import training_steps

log = logging.getLogger(__name__)

# Losses whose generator loss has no fixed level (an unbounded critic score): its size means nothing.
UNBOUNDED_G_LOSS_KINDS = ("wasserstein", "hinge")


class NonFiniteTrainingError(RuntimeError):
    """Training produced NaN or Inf; the message says where and what to try."""


class TrainingHealthWarning(UserWarning):
    """A sign that GAN training is failing (collapse, divergence); training goes on."""


def nonfinite_values(outputs: Any) -> dict[str, float]:
    """The entries of a training step's returned dict that are NaN or Inf."""
    if not isinstance(outputs, Mapping):
        return {}
    bad = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = float(value.detach())
        if isinstance(value, (int, float)) and not math.isfinite(value):
            bad[str(key)] = float(value)
    return bad


def _float_tensors(pl_module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    named = list(pl_module.named_parameters()) + list(pl_module.named_buffers())
    return [(name, t) for name, t in named if t.is_floating_point()]


def all_finite(pl_module: torch.nn.Module) -> torch.Tensor:
    """Whether every floating-point weight and buffer is finite, as a 0-d tensor left on the device."""
    tensors = [t.detach() for _, t in _float_tensors(pl_module)]
    if not tensors:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()


def weights_are_finite(pl_module: torch.nn.Module) -> bool:
    """One pass over all floating-point weights and buffers, one host sync."""
    return bool(all_finite(pl_module))


def nonfinite_weight_names(pl_module: torch.nn.Module, limit: int = 5) -> list[str]:
    return [name for name, t in _float_tensors(pl_module) if not bool(torch.isfinite(t.detach()).all())][:limit]


def likely_causes(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> list[str]:
    """Hints tailored to the run: learning rates, an unregularised Wasserstein critic, fp16."""
    hints = []
    lrs = []
    if trainer is not None:
        for name, opt in zip(("g", "d"), trainer.optimizers):
            lrs.append(f"model.optimizer.{name}.lr={opt.param_groups[0]['lr']:g}")
    hints.append("the learning rate is too high" + (f" ({', '.join(lrs)}): try 2-10x lower" if lrs else ""))
    loss = getattr(pl_module, "loss", None)
    if getattr(loss, "kind", None) == "wasserstein" and not getattr(loss, "gp_weight", 0) and getattr(loss, "clip_value", None) is None:
        hints.append("a Wasserstein critic without gradient penalty or weight clipping is unbounded: use "
                     "loss=wgan_gp (or model.loss.clip_value / model.grad_clip_d)")
    else:
        hints.append("no gradient clipping: try model.grad_clip_d=1.0 model.grad_clip_g=1.0, or a gradient "
                     "penalty (loss=wgan_gp)")
    precision = str(getattr(trainer, "precision", "")) if trainer is not None else ""
    if "16" in precision and "bf16" not in precision:
        hints.append(f"fp16 precision ({precision}) overflows easily in GANs: use trainer.precision=bf16-mixed or 32-true")
    else:
        hints.append("fp16 mixed precision, if you switch it on, overflows easily: prefer bf16-mixed")
    return hints


def last_checkpoint(trainer: pl.Trainer | None) -> str | None:
    """The newest checkpoint the checkpoint callbacks have written (it predates the bad step)."""
    if trainer is None:
        return None
    for callback in trainer.checkpoint_callbacks:
        for attr in ("last_model_path", "best_model_path"):
            path = getattr(callback, attr, "")
            if path and Path(path).is_file():
                return str(path)
    return None


class NonFiniteGuard(pl.Callback):
    """Stop (default) or skip a training step whose losses or resulting weights are NaN/Inf.

    Args:
        on_nan: ``stop`` raises :class:`NonFiniteTrainingError` before anything bad is saved;
            ``skip`` restores the weights and optimizer states from before the step (see the module
            docstring for the cost) and stops after ``max_skips`` consecutive bad steps.
        check_every_n_steps: read the steps' figures from the device every N generator steps (one
            transfer for the block) and name the first bad step exactly. It also reads on the steps
            where another callback acts on the model (a callback's ``every_n_steps``: samples,
            quality), before each checkpoint and at the end of training. ``skip`` reads every step.
        check_weights_every_n_steps: also check every weight every N generator steps (0: only the
            losses, plus the check before each checkpoint). ``skip`` always checks every step.
        max_skips: consecutive skipped steps after which ``skip`` stops anyway.
    """

    def __init__(self, on_nan: str = "stop", check_every_n_steps: int = DEFAULT_READ_EVERY_N_STEPS,
                 check_weights_every_n_steps: int = 0, max_skips: int = 10) -> None:
        if on_nan not in ("stop", "skip"):
            raise ValueError(f"callbacks.guards.on_nan must be 'stop' or 'skip', got {on_nan!r}.")
        if isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise ValueError(f"callbacks.guards.check_every_n_steps must be a positive integer, got {check_every_n_steps!r}.")
        if check_weights_every_n_steps < 0:
            raise ValueError(f"check_weights_every_n_steps must be >= 0, got {check_weights_every_n_steps}.")
        if max_skips < 1:
            raise ValueError(f"max_skips must be >= 1, got {max_skips}.")
        self.on_nan = on_nan
        self.check_every_n_steps = 1 if on_nan == "skip" else check_every_n_steps
        self.check_weights_every_n_steps = check_weights_every_n_steps
        self.max_skips = max_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._snapshot: tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None = None
        self._pending = PendingSteps(self.check_every_n_steps)
        self._weight_flags: list[tuple[int, torch.Tensor]] = []  # (step, all weights finite) on the device

    # --- skip: keep the state from before the step ------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.on_nan == "skip":
            weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            optimizers = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]
            self._snapshot = (weights, optimizers)

    def _restore(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._snapshot is not None
        weights, optimizers = self._snapshot
        counter = getattr(pl_module, "generator_steps", None)
        keep = counter.clone() if isinstance(counter, torch.Tensor) else None
        pl_module.load_state_dict(weights)
        if keep is not None:
            pl_module.generator_steps.copy_(keep)  # the step still counts (schedules stay aligned)
        for opt, state in zip(trainer.optimizers, optimizers):
            # An optimizer step changes no group setting; a scheduler stepping per generator step
            # (model.scheduler_interval=step) does, and the step still counts: its rates stay.
            settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
            opt.load_state_dict(copy.deepcopy(state))
            for group, kept in zip(opt.param_groups, settings):
                group.update(kept)

    # --- the check: every step's figures, read in blocks --------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        step = training_steps(trainer, pl_module)
        due = self._pending.add(outputs, step)
        every = self.check_weights_every_n_steps
        if self.on_nan == "skip" or (every > 0 and step % every == 0):
            self._weight_flags.append((step, all_finite(pl_module)))
        # A callback that uses the model on this step (a sample grid, a quality check) should not
        # see a bad state the guard has not yet looked at.
        due = due or any(step % n == 0 for n in self._acting_intervals(trainer))
        if due:
            self.check(trainer, pl_module, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module, training_steps(trainer, pl_module))

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, across_ranks: bool = True) -> None:
        """Read the steps since the last check and act on the first bad one (all ranks together,
        unless ``across_ranks`` is false: a checkpoint may be assembled on one rank only)."""
        flags = self._weight_flags
        self._weight_flags = []
        records, finite = self._pending.take(extra=[flag for _, flag in flags])
        bad_step, what = None, ""
        for record in records:
            bad_values = nonfinite_values(record.host())
            if bad_values:
                bad_step, what = record.step, self._describe(pl_module, bad_values, record.host())
                break
        bad_weights = next((s for (s, _), ok in zip(flags, finite) if not ok), None)
        if bad_weights is not None and (bad_step is None or bad_weights < bad_step):
            bad_step, what = bad_weights, self._describe(pl_module, {}, None)
        if across_ranks and getattr(trainer, "world_size", 1) > 1:
            bad_step, what = self._first_bad_across_ranks(trainer, pl_module, bad_step, what)
        if bad_step is None:
            if records:  # a good step read: the run of bad ones is over
                self.consecutive_skips = 0
            return
        if self.on_nan == "skip" and self.consecutive_skips < self.max_skips:
            self._restore(trainer, pl_module)
            self.skipped_steps += 1
            self.consecutive_skips += 1
            message = (f"Generator step {bad_step}: {what}; the step was skipped (weights and optimizer state "
                       f"restored from before it; {self.skipped_steps} skipped so far).")
            log.warning(message)
            warnings.warn(message, TrainingHealthWarning, stacklevel=2)
            return
        raise NonFiniteTrainingError(self._stop_message(trainer, pl_module, bad_step, what, now=step))

    @staticmethod
    def _first_bad_across_ranks(trainer: pl.Trainer, pl_module: pl.LightningModule, bad_step: int | None,
                                what: str) -> tuple[int | None, str]:
        """The earliest bad step of any rank, so that every rank names the same step (a min all-reduce of
        step * world_size + rank; no rank bad: None). Another rank's values are not sent, only its number."""
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        none = torch.iinfo(torch.int64).max
        mine = none if bad_step is None else bad_step * world + rank
        first = int(trainer.strategy.reduce(torch.tensor(mine, device=pl_module.device), reduce_op="min"))
        if first == none:
            return None, ""
        if bad_step is not None and first // world == bad_step:  # this rank went bad at that step too
            return bad_step, what
        return first // world, f"NaN/Inf on rank {first % world} (DDP; that rank's own error gives the values)"

    def _acting_intervals(self, trainer: pl.Trainer) -> list[int]:
        intervals = []
        for callback in trainer.callbacks:
            every = getattr(callback, "every_n_steps", None)
            if callback is not self and isinstance(every, int) and not isinstance(every, bool) and every > 0:
                intervals.append(every)
        return intervals

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending.clear()  # nothing left over from an interrupted fit
        self._weight_flags = []

    # Before ModelCheckpoint's own hooks (callbacks run in list order, checkpointing last): the
    # usual saves then find nothing unread.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module, training_steps(trainer, pl_module))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module, training_steps(trainer, pl_module))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.before_checkpoint(trainer, pl_module)

    def before_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Runs while a checkpoint is being assembled, before anything is written: never save NaN
        weights. The steps not yet read go first, so that a bad step is named exactly. Called from
        ``on_save_checkpoint``, and by GANModule for the weights-only checkpoints for which Lightning
        does not call the callbacks. ``Trainer.save_checkpoint`` runs on every rank, so the decision
        is taken together."""
        step = training_steps(trainer, pl_module)
        together = getattr(trainer, "world_size", 1) > 1
        try:
            self.check(trainer, pl_module, step, across_ranks=together)
        except NonFiniteTrainingError as error:
            raise NonFiniteTrainingError(f"{error}\n(Caught as a checkpoint was about to be written: it was not written.)") from None
        bad_weights = not weights_are_finite(pl_module)
        if together:
            bad_weights = trainer.strategy.reduce_boolean_decision(bad_weights, all=False)
        if bad_weights:
            what = self._describe(pl_module, {}, None) + " (caught as a checkpoint was about to be written: it was not written)"
            raise NonFiniteTrainingError(self._stop_message(trainer, pl_module, step, what))

    def _describe(self, pl_module: pl.LightningModule, bad_values: dict[str, float], outputs: Any) -> str:
        if bad_values:
            others = {k: v for k, v in (outputs or {}).items() if k not in bad_values and isinstance(v, (int, float))}
            first = sorted(others, key=lambda k: (k not in ("d_loss", "g_loss", "loss"), list(others).index(k)))
            shown = ", ".join(f"{k}={v}" for k, v in bad_values.items())
            context = ", ".join(f"{k}={others[k]:.4g}" for k in first[:4])
            return f"{shown}" + (f" (with {context})" if context else "")
        names = nonfinite_weight_names(pl_module)
        return "the weights became NaN/Inf" + (f" ({', '.join(names)})" if names else "")

    def _stop_message(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, what: str,
                      now: int | None = None) -> str:
        if now is None or now == step:
            lines = [f"Training stopped at generator step {step}: {what}."]
        else:  # read in a block: the bad step came before the check
            lines = [f"Training stopped at generator step {now}: generator step {step} went bad: {what}."]
        ckpt = last_checkpoint(trainer)
        if ckpt:
            lines.append(f"The last good checkpoint is untouched: {ckpt} (resume with ckpt_path={ckpt} and a fix below).")
        else:
            lines.append("No checkpoint had been written yet; nothing bad was saved.")
        lines.append("Likely causes:")
        lines += [f"  - {hint}" for hint in likely_causes(trainer, pl_module)]
        if self.on_nan == "stop":
            lines.append("To throw bad steps away instead of stopping: callbacks.guards.on_nan=skip.")
        else:
            lines.append(f"{self.consecutive_skips} consecutive steps were skipped (max_skips={self.max_skips}).")
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))


class CollapseWatch(pl.Callback):
    """Warn when D wins outright for a long time, or when G's loss runs away; never stops training.

    Args:
        patience: generator steps a condition must hold before the warning (once per episode: it
            re-arms when the condition breaks).
        d_acc_threshold: warn when ``(d_acc_real + d_acc_fake) / 2`` stays above this.
        g_loss_max: warn when ``g_loss`` stays above this (null: off). For the logistic losses
            ``g_loss = -log D(G(z))``, so 20 means D gives fakes a probability below 2e-9.
        g_loss_growth: warn when ``g_loss`` stays above this many times its early level (the median
            of ``|g_loss|`` over the first ``patience`` steps, at least 1); null: off.
        read_every_n_steps: the steps' figures are read from the device in blocks of this many
            steps, so a warning comes up to that many steps after the step that completes it.
    The ``g_loss`` checks are off for Wasserstein and hinge losses, whose generator loss is a critic
    score with no fixed level.
    """

    def __init__(self, patience: int = 200, d_acc_threshold: float = 0.99, g_loss_max: float | None = 20.0,
                 g_loss_growth: float | None = 10.0, read_every_n_steps: int = DEFAULT_READ_EVERY_N_STEPS) -> None:
        if patience < 1:
            raise ValueError(f"callbacks.collapse_watch.patience must be >= 1, got {patience}.")
        if isinstance(read_every_n_steps, bool) or not isinstance(read_every_n_steps, int) or read_every_n_steps < 1:
            raise ValueError("callbacks.collapse_watch.read_every_n_steps must be a positive integer, "
                             f"got {read_every_n_steps!r}.")
        self._pending = PendingSteps(read_every_n_steps)
        self.patience = int(patience)
        self.d_acc_threshold = d_acc_threshold
        self.g_loss_max = g_loss_max
        self.g_loss_growth = g_loss_growth
        self.g_loss_checks = True
        self._early: list[float] = []
        self._recent: deque[tuple[int, Mapping[str, float]]] = deque(maxlen=self.patience)
        self._streak = {"d_wins": 0, "g_loss_high": 0, "g_loss_growing": 0}
        self._warned = {key: False for key in self._streak}
        self.warnings: list[str] = []

    @property
    def g_loss_reference(self) -> float | None:
        if len(self._early) < self.patience:
            return None
        return max(1.0, statistics.median(abs(v) for v in self._early))

    def observe(self, step: int, metrics: Mapping[str, float]) -> list[str]:
        """Feed one generator step's metrics; returns the warnings it raised (also logged and warned)."""
        self._recent.append((step, metrics))
        conditions: dict[str, bool] = {}
        acc_real, acc_fake = metrics.get("d_acc_real"), metrics.get("d_acc_fake")
        if acc_real is not None and acc_fake is not None:
            conditions["d_wins"] = (acc_real + acc_fake) / 2 > self.d_acc_threshold
        g_loss = metrics.get("g_loss")
        if g_loss is not None and self.g_loss_checks and math.isfinite(g_loss):
            if self.g_loss_max is not None:
                conditions["g_loss_high"] = g_loss > self.g_loss_max
            reference = self.g_loss_reference
            if reference is None:
                self._early.append(float(g_loss))
            elif self.g_loss_growth is not None:
                conditions["g_loss_growing"] = g_loss > self.g_loss_growth * reference
        raised = []
        for key in self._streak:
            if not conditions.get(key, False):
                self._streak[key], self._warned[key] = 0, False
                continue
            self._streak[key] += 1
            if self._streak[key] >= self.patience and not self._warned[key]:
                self._warned[key] = True
                raised.append(self._message(key, step))
        for message in raised:
            log.warning(message)
            warnings.warn(message, TrainingHealthWarning, stacklevel=2)
        self.warnings += raised
        return raised

    def _window(self, key: str) -> tuple[int, float]:
        values = [m[key] for _, m in self._recent if key in m]
        return self._recent[0][0], (sum(values) / len(values) if values else float("nan"))

    def _message(self, key: str, step: int) -> str:
        first, g_mean = self._window("g_loss")
        span = f"generator steps {first}-{step}"
        if key == "d_wins":
            _, real = self._window("d_acc_real")
            _, fake = self._window("d_acc_fake")
            return (f"Discriminator collapse watch: D has been right on more than {self.d_acc_threshold:.0%} of real "
                    f"and fake samples for {self.patience} generator steps ({span}; mean d_acc_real={real:.3f}, "
                    f"d_acc_fake={fake:.3f}, g_loss={g_mean:.3g}). G's gradient is vanishing and samples tend to "
                    "collapse: try a lower model.optimizer.d.lr, fewer critic steps (model.n_critic), a gradient "
                    "penalty (loss=wgan_gp) or another loss (loss=hinge).")
        if key == "g_loss_high":
            return (f"Divergence watch: g_loss has stayed above {self.g_loss_max:g} for {self.patience} generator steps "
                    f"({span}; mean {g_mean:.3g}). D rejects every fake: lower the learning rates or restart from an "
                    "earlier checkpoint with clipping (model.grad_clip_d).")
        return (f"Divergence watch: g_loss has stayed above {self.g_loss_growth:g}x its early level "
                f"({self.g_loss_reference:.3g}) for {self.patience} generator steps ({span}; mean {g_mean:.3g}): "
                "training is diverging; lower the learning rates or add clipping / a gradient penalty.")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kind = getattr(getattr(pl_module, "loss", None), "kind", None)
        self.g_loss_checks = kind not in UNBOUNDED_G_LOSS_KINDS

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        if trainer.is_global_zero and self._pending.add(outputs, training_steps(trainer, pl_module)):
            self._observe_pending()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._observe_pending()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending.clear()  # nothing left over from an interrupted fit

    def _observe_pending(self) -> None:
        records, _ = self._pending.take()
        for record in records:
            self.observe(record.step, record.host())
