"""Config checks that run before any work (no data loaded, no network built): combinations that
would fail late, fail with someone else's message, or silently do something other than asked.

What is checked elsewhere is not repeated here: unknown keys and options stop at compose time (Hydra's
struct mode), ``module.n_critic``, clipping and EMA values in ``GANModule``, loss names and values in
``GANLoss``, shapes and output ranges in ``build.validate_setup``.
"""
from __future__ import annotations

import warnings
from typing import Any

from omegaconf import DictConfig

from gan_modules.build import is_autoencoder

GAN_METRICS = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake", "gradient_penalty",
               "r1_penalty", "drift_penalty", "generator_steps", "resolution", "alpha", "kimg")


class ConfigError(ValueError):
    """A config that cannot work; the message names the keys and the fix."""


def _strategy_name(strategy: Any) -> str:
    if strategy is None:
        return ""
    if isinstance(strategy, str):
        return strategy
    target = strategy.get("_target_", "") if hasattr(strategy, "get") else ""
    return str(target)


def _callback_targets(cfg: DictConfig) -> list[str]:
    callbacks = cfg.get("callbacks") or {}
    return [str(node.get("_target_", "")) for node in callbacks.values() if node is not None and hasattr(node, "get")]


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (or warn) for config combinations that cannot work as meant."""
    trainer = cfg.get("trainer") or {}
    gan = not is_autoencoder(cfg)

    # Training length asked for twice: train.py would silently replace trainer.max_steps.
    max_steps = trainer.get("max_steps")
    if cfg.get("max_generator_steps") is not None and max_steps not in (None, -1):
        raise ConfigError(
            f"Both max_generator_steps={cfg.max_generator_steps} and trainer.max_steps={max_steps} are set. "
            "Give one: max_generator_steps counts generator steps, trainer.max_steps counts Lightning's "
            "optimizer steps (n_critic + 1 per generator step for a GAN)."
        )

    if gan:
        # Manual optimisation: Lightning refuses these at fit time with a message that does not say
        # what to use instead.
        clip = trainer.get("gradient_clip_val")
        if clip not in (None, 0, 0.0):
            raise ConfigError(
                f"trainer.gradient_clip_val={clip} does not work for GANs (they optimise manually): use "
                "module.grad_clip_d and/or module.grad_clip_g (gradient-norm clipping per network)."
            )
        accumulate = trainer.get("accumulate_grad_batches")
        if accumulate not in (None, 1):
            raise ConfigError(
                f"trainer.accumulate_grad_batches={accumulate} does not work for GANs (manual optimisation): "
                "raise dataset.batch_size instead, or train on more devices (trainer=ddp)."
            )
        # DDP without unused-parameter detection fails on the first step: the D phase does not use
        # G's parameters.
        node = trainer.get("strategy")
        strategy = _strategy_name(node) or "auto"
        find_unused = bool(node.get("find_unused_parameters", False)) if isinstance(node, DictConfig) else False
        devices = trainer.get("devices", 1)
        several = (isinstance(devices, int) and devices > 1) or (not isinstance(devices, (int, str)) and len(devices) > 1)
        several = several or int(trainer.get("num_nodes", 1) or 1) > 1
        uses_ddp = "ddp" in strategy.lower() or strategy.endswith("DDPStrategy") or (strategy == "auto" and several)
        if uses_ddp and "find_unused_parameters_true" not in strategy and not find_unused:
            raise ConfigError(
                f"trainer.strategy={strategy} (DDP) cannot train a GAN: each phase leaves the other network's "
                "parameters unused, which plain DDP rejects at the first step. Use trainer=ddp (strategy "
                "ddp_find_unused_parameters_true), or trainer=ddp_cpu on the CPU."
            )

    # The metric a sweeper optimises must be one the run produces.
    metric = cfg.get("optimized_metric")
    if metric:
        metric = str(metric)
        if metric.startswith("quality/"):
            if not any(t.endswith("SampleQuality") for t in _callback_targets(cfg)):
                raise ConfigError(
                    f"optimized_metric={metric} is logged by the quality callback, which this config does not "
                    "have: add callbacks=quality (and set callbacks.quality.every_n_steps so it runs)."
                )
        elif gan and metric not in GAN_METRICS and "/" not in metric:
            # Only a warning: a model or callback may log more; train.py raises at the end if it is missing.
            warnings.warn(
                f"optimized_metric={metric} is not one of the metrics every GAN run logs "
                f"({', '.join(GAN_METRICS)}; or quality/<name> with callbacks=quality, e.g. quality/fid).",
                stacklevel=2,
            )


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value train.py returns to a sweeper; a clear error when the run did not log it."""
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} was not logged by this run (logged: {', '.join(sorted(metrics)) or 'nothing'}). "
            "For quality/<name>, make sure the quality callback ran at least once "
            "(callbacks.quality.every_n_steps <= the number of generator steps)."
        )
    return metrics[name]
