"""The training job behind ``train.py``: build everything from the config, check it, fit."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_modules.build import build_module, validate_setup
from gan_modules.callbacks.run_config import RunConfigInCheckpoint
from gan_modules.atomic_files import atomic_write_text
from gan_modules.checkpoints import load_checkpoint
from gan_modules.resume_settings import ResumeConfigError
from gan_modules.run_folder import (choose_resume, keep_previous_config, locked_run_folder, read_checkpoint_step,
                                    remove_leftover_temp_files, set_aside_later_metrics)
from gan_modules.preflight import validate_config
from gan_modules.steps import trainer_length

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a dict-of-configs group (callbacks, logger)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, overwrite: bool = False) -> tuple[str | None, list[Path]]:
    """The checkpoint to resume from (``auto``: the latest in this run folder) and the checkpoints of
    a later step that ``overwrite=true`` allows this run to replace (see ``run_folder.choose_resume``)."""
    if ckpt_path in (None, ""):
        ckpt_path = None
    elif ckpt_path != "auto":
        if Path(ckpt_path).is_dir():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} is a folder: give the path of a .ckpt file, or 'auto'.")
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist: give the path of a .ckpt file, or 'auto'.")
        load_checkpoint(ckpt_path)  # a truncated, corrupt or foreign file: a clear error before any work
    chosen, later = choose_resume(ckpt_path, output_dir, overwrite)
    if chosen is not None and ckpt_path == "auto":
        load_checkpoint(chosen)
    return chosen, later


def check_checkpoint_fits(module: Any, ckpt_path: str) -> dict[str, Any]:
    """Refuse, before anything is written, a checkpoint whose weights do not fit the configured model."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint["state_dict"]
    expected = module.state_dict()
    # The EMA generator, and the loss's state (its terms' and augmentation's buffers), may be switched
    # on or off on resume (GANModule.on_load_checkpoint).
    optional = ("generator_ema.", "loss.")
    missing = [k for k in expected if k not in saved and not k.startswith(optional)]
    unexpected = [k for k in saved if k not in expected and not k.startswith(optional)]
    mismatched = [f"{k} {list(saved[k].shape)} (the config's model: {list(v.shape)})" for k, v in expected.items()
                  if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        details = []
        for label, keys in (("missing", missing), ("not in the model", unexpected), ("other shapes", mismatched)):
            if keys:
                details.append(f"{label}: {', '.join(keys[:5])}" + (f" and {len(keys) - 5} more" if len(keys) > 5 else ""))
        raise ResumeConfigError(
            f"ckpt_path={ckpt_path} holds weights of another model than this config builds ({'; '.join(details)}). "
            "Resume with the config the checkpoint was trained with (its run folder's config.yaml, or "
            "--config-dir <run>/.hydra --config-name config), or start a new run without ckpt_path."
        )
    return checkpoint


def check_resume_length(cfg: DictConfig, checkpoint: dict[str, Any], ckpt_path: str) -> None:
    """A resumed run must have epochs left: Lightning refuses only after the run folder was touched."""
    max_epochs = (cfg.get("trainer") or {}).get("max_epochs")
    if cfg.get("max_generator_steps") is not None or max_epochs in (None, -1):
        return
    epoch = int(checkpoint.get("epoch", 0))
    if epoch >= int(max_epochs):
        raise ResumeConfigError(
            f"ckpt_path={ckpt_path} was written in epoch {epoch + 1} (counting from 1), and trainer.max_epochs="
            f"{max_epochs} ends before it: raise trainer.max_epochs to train further (e.g. "
            f"trainer.max_epochs={epoch + 1 + int(max_epochs)}), or give max_generator_steps."
        )


def check_resume_schedule(module: Any, checkpoint: dict[str, Any], ckpt_path: str) -> None:
    """A scheduler's saved count means epochs or generator steps: resuming it under the other is refused."""
    wanted = getattr(module, "scheduler_interval", None)
    saved = checkpoint.get("scheduler_interval", "epoch")  # checkpoints from before the option stepped per epoch
    if wanted is None or wanted == saved or not checkpoint.get("lr_schedulers"):
        return
    raise ResumeConfigError(
        f"ckpt_path={ckpt_path} was trained with model.scheduler_interval={saved}: its schedulers have counted "
        f"{saved}s, and model.scheduler_interval={wanted} would read that count as {wanted}s. Resume with "
        f"model.scheduler_interval={saved}, or start a new run."
    )


def finish_loggers(loggers: list[Any]) -> None:
    """End runs that outlive the Trainer, so the next job of a multirun starts a fresh one."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            try:
                logger.experiment.finish()
            except Exception as err:  # finishing must not hide the error that ended the run
                log.warning("Could not finish the W&B run: %s", err)


def is_global_rank_zero() -> bool:
    """Before the Trainer exists: whether this process is the first of a distributed run (or alone)."""
    from lightning_fabric.utilities.rank_zero import _get_rank

    return (_get_rank() or 0) == 0


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured GAN; returns the final logged metrics."""
    validate_config(cfg)  # config combinations that cannot work, before any data or network
    output_dir = Path(cfg.paths.output_dir)
    first_rank = is_global_rank_zero()
    # Other ranks of a distributed run share rank 0's folder and its lock.
    with locked_run_folder(output_dir, enabled=first_rank):
        if first_rank:
            remove_leftover_temp_files(output_dir)
        return _train_in_folder(cfg, output_dir, first_rank)


def _train_in_folder(cfg: DictConfig, output_dir: Path, first_rank: bool) -> dict[str, float]:
    ckpt_path, later_checkpoints = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, bool(cfg.get("overwrite")))
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg)
    validate_setup(module, datamodule)  # fail in milliseconds, not after the first epoch
    resume_logged_step = None
    if ckpt_path is not None:
        checkpoint = check_checkpoint_fits(module, ckpt_path)
        check_resume_length(cfg, checkpoint, ckpt_path)
        check_resume_schedule(module, checkpoint, ckpt_path)
        del checkpoint  # not kept in memory through training; Lightning reads the file itself
        resume_logged_step = read_checkpoint_step(Path(ckpt_path)).logged_step

    resolved = OmegaConf.to_container(cfg, resolve=True)
    config_text = OmegaConf.to_yaml(resolved)
    if first_rank:
        # From here on files change: only what the checks above allowed.
        for path in later_checkpoints:
            log.warning("overwrite=true: deleting %s (a later step than this run starts from)", path)
            path.unlink(missing_ok=True)
        set_aside_later_metrics(output_dir, resume_logged_step)
        kept = keep_previous_config(output_dir, config_text)
        if kept is not None:
            log.info("The previous run's config.yaml differs from this one's; kept it as %s", kept)
        atomic_write_text(output_dir / "config.yaml", config_text)
    callbacks = instantiate_all(cfg.get("callbacks")) + [RunConfigInCheckpoint(resolved)]
    loggers = instantiate_all(cfg.get("logger"))
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False,
            **trainer_length(cfg.get("max_generator_steps"), module),
        )
        log.info("Run folder: %s", output_dir.resolve())
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        finish_loggers(loggers)  # also after a crash: a W&B run left open would swallow the next job's
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if hasattr(module, "generator_steps"):
        metrics["generator_steps"] = float(module.generator_steps)
    return metrics
