"""The training job behind ``train.py``: build everything from the config, check it, fit."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_modules.build import build_module, is_autoencoder, validate_setup
from gan_modules.callbacks.run_config import RunConfigInCheckpoint
from gan_modules.checkpoints import load_checkpoint
from gan_modules.validation import validate_config

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a dict-of-configs group (callbacks, logger)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``auto`` resumes from this run folder's ``checkpoints/last.ckpt`` when it exists."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None
        ckpt_path = str(last)
    elif not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist: give the path of a .ckpt file, or 'auto'.")
    load_checkpoint(ckpt_path)  # a truncated, corrupt or foreign file: a clear error before any work
    return str(ckpt_path)


def finish_loggers(loggers: list[Any]) -> None:
    """End runs that outlive the Trainer, so the next job of a multirun starts a fresh one."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def trainer_length(cfg: DictConfig) -> dict[str, Any]:
    """Translate ``max_generator_steps`` into Lightning's optimizer-step count."""
    steps = cfg.get("max_generator_steps")
    if steps is None:
        return {}
    if int(steps) < 1:
        raise ValueError(f"max_generator_steps must be a positive integer or null, got {steps}.")
    # Each generator step performs n_critic discriminator steps too, and Lightning counts all of them;
    # an autoencoder makes one optimizer step per batch.
    per_step = 1 if is_autoencoder(cfg) else int(cfg.module.n_critic) + 1
    return {"max_steps": int(steps) * per_step, "max_epochs": -1}


def warn_ignored_gan_overrides(cfg: DictConfig) -> None:
    """An autoencoder trains with ``model.system``: say so when the command line set the GAN-only groups."""
    from hydra.core.hydra_config import HydraConfig

    if not is_autoencoder(cfg) or not HydraConfig.initialized():
        return
    ignored = [o for o in HydraConfig.get().overrides.task
               if o.lstrip("+~").split("=", 1)[0].split(".")[0] in ("loss", "optimizer", "module", "scheduler")]
    if ignored:
        warnings.warn(
            f"{', '.join(ignored)}: an autoencoder ignores the GAN groups loss, optimizer, module and scheduler; "
            "set its training under model.system (e.g. model.system.optimizer.lr=3e-4).",
            stacklevel=2,
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured GAN; returns the final logged metrics."""
    validate_config(cfg)  # config combinations that cannot work, before any data or network
    warn_ignored_gan_overrides(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg)
    validate_setup(module, datamodule)  # fail in milliseconds, not after the first epoch

    resolved = OmegaConf.to_container(cfg, resolve=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    callbacks = instantiate_all(cfg.get("callbacks")) + [RunConfigInCheckpoint(resolved)]
    loggers = instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False, **trainer_length(cfg)
    )
    log.info("Run folder: %s", output_dir.resolve())
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finish_loggers(loggers)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if hasattr(module, "generator_steps"):
        metrics["generator_steps"] = float(module.generator_steps)
    return metrics
