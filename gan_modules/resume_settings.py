"""On resume, the optimizers run with the hyperparameters of the config given, not the checkpoint's.

Lightning restores each optimizer's ``param_groups`` from the checkpoint, learning rate included, so a
resumed run with ``model.optimizer.d.lr=1e-4`` kept training at the checkpoint's rate while its config (and
the checkpoints it wrote) said 1e-4. :func:`apply_configured_hyperparameters` runs when training starts,
after the restore: it reads the hyperparameters the configured optimizer would be built with and puts
them into the restored groups, keeping the optimizer's state (Adam's moments) as it is. With an LR
scheduler, a new learning rate becomes the scheduler's base rate and the current, scheduled rate is
scaled by the same factor, so the schedule goes on from where it was.

Everything else that shapes training (n_critic, loss weights, EMA decay, clipping) is read from the
config when the module is built, so it already applies on resume.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

# Settings that change what the optimizer keeps in its state, or how it runs: changing them on resume
# is refused rather than half-applied.
STRUCTURAL = ("amsgrad", "nesterov", "centered", "maximize", "capturable", "differentiable", "fused",
              "foreach", "decoupled_weight_decay")


class ResumeConfigError(ValueError):
    """The config asks for an optimizer the checkpoint's state cannot continue."""


def configured_defaults(factory: Callable[..., torch.optim.Optimizer]) -> tuple[type, dict[str, Any]]:
    """The class and hyperparameters ``factory`` builds an optimizer with (on a throwaway parameter)."""
    probe = factory(params=[torch.nn.Parameter(torch.zeros(1))])
    return type(probe), dict(probe.defaults)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def apply_configured_hyperparameters(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
) -> list[str]:
    """Make ``optimizer``'s groups use ``factory``'s hyperparameters; returns what changed, as text.

    ``name`` is the config key of the optimizer (``model.optimizer.g``), used in messages.
    """
    # Lightning wraps optimizers (LightningOptimizer); the groups live on the wrapped one.
    optimizer = getattr(optimizer, "optimizer", optimizer)
    kind, wanted = configured_defaults(factory)
    for group in optimizer.param_groups:
        # Keys only one of the two optimizers has: the checkpoint's state belongs to another optimizer.
        foreign = (set(group) ^ set(wanted)) - {"params", "initial_lr"} - set(STRUCTURAL)
        if foreign or not isinstance(optimizer, kind):
            raise ResumeConfigError(
                f"{name} builds {kind.__name__}, but the checkpoint's state for it was saved by another optimizer "
                f"(settings {', '.join(sorted(foreign)) or type(optimizer).__name__} differ); its state cannot "
                "continue under another optimizer. Resume with the checkpoint's optimizer, or start a new run."
            )
    scheduled_momentum = bool(getattr(scheduler, "cycle_momentum", False))
    changes: list[str] = []
    for index, group in enumerate(optimizer.param_groups):
        for key, value in wanted.items():
            if key not in group or _same(group[key], value):
                continue
            if key in STRUCTURAL:
                raise ResumeConfigError(
                    f"{name}.{key}={value} differs from the checkpoint's {group[key]}: the optimizer's saved state "
                    f"was built with {key}={group[key]} and cannot switch mid-run. Resume with {name}.{key}="
                    f"{group[key]}, or start a new run."
                )
            if key in ("betas", "momentum") and scheduled_momentum:
                continue  # the scheduler cycles these; its own state decides them
            if key == "lr" and scheduler is not None and "initial_lr" in group:
                old_base = float(group["initial_lr"])
                if _same(old_base, value):
                    continue  # only the schedule moved the rate
                factor = float(value) / old_base if old_base else 1.0
                group["initial_lr"] = value
                group["lr"] = float(group["lr"]) * factor
                if hasattr(scheduler, "base_lrs") and index < len(scheduler.base_lrs):
                    scheduler.base_lrs[index] = value
                changes.append(f"{name}.lr: base {old_base:g} -> {value:g} (scheduled rate now {group['lr']:g})")
                continue
            changes.append(f"{name}.{key}: {group[key]} -> {value}")
            group[key] = value
    for change in dict.fromkeys(changes):
        log.info("Resumed with the config's %s (the checkpoint had the other value)", change)
    return list(dict.fromkeys(changes))


def apply_to_trainer(trainer: Any, factories: dict[str, Callable[..., torch.optim.Optimizer]]) -> list[str]:
    """Apply each configured optimizer (config key -> factory, in the order of ``trainer.optimizers``)."""
    schedulers = {id(getattr(c.scheduler, "optimizer", None)): c.scheduler for c in trainer.lr_scheduler_configs}
    changes: list[str] = []
    for (name, factory), optimizer in zip(factories.items(), trainer.optimizers):
        changes += apply_configured_hyperparameters(name, factory, optimizer, schedulers.get(id(optimizer)))
    return changes
