"""Pre-flight config checks, run before any work (no data loaded, no network built): combinations that
would fail late, fail with someone else's message, or silently do something other than asked.

Values are checked by their config path, the key as the user types it (``model.optimizer.g.lr``,
``model.generator.z_dim``): integers where integers are meant, sizes of at least 1, learning rates and
other optimizer settings in their range. The constructors check again for users who build objects in
Python; here the same mistakes stop before data is loaded or the run folder gets files, with the key.
Unknown keys and options stop at compose time (Hydra's struct mode); shapes and output ranges are
checked in ``build.validate_setup``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


# ---------------------------------------------------------------- single values, by config path
_ABSENT = object()

# (path, minimum, null allowed, what it means): integers of the composed config, known by path.
TOP_INTEGERS: tuple[tuple[str, int, bool, str], ...] = (
    ("max_generator_steps", 1, True, "generator steps to train; null trains for trainer.max_epochs"),
    ("dataset.batch_size", 1, False, "samples per batch"),
    ("dataset.num_workers", 0, False, "data-loading processes; 0 loads in the main process"),
    ("dataset.image_size", 1, False, "image side in pixels"),
    ("dataset.val_size", 0, False, "training images held out for validation"),
    ("dataset.subset", 1, True, "training samples used; null for all of them"),
    ("dataset.subset_seed", 0, False, "the seed of the subset's fixed permutation"),
    ("dataset.num_samples", 1, False, "samples drawn"),
    ("dataset.channels", 1, False, "image channels"),
    ("dataset.num_classes", 1, True, "classes; null for unlabelled data"),
    ("trainer.max_epochs", -1, True, "epochs; -1 for no limit"),
    ("trainer.min_epochs", 0, True, "epochs at least"),
    ("trainer.max_steps", -1, True, "Lightning optimizer steps; -1 for no limit"),
    ("trainer.min_steps", 0, True, "Lightning optimizer steps at least"),
    ("trainer.log_every_n_steps", 1, True, "steps between logged rows"),
    ("trainer.num_sanity_val_steps", -1, True, "validation batches before training; -1 for all"),
    ("trainer.check_val_every_n_epoch", 1, True, "epochs between validations"),
    ("trainer.reload_dataloaders_every_n_epochs", 0, False, "epochs between data-loader rebuilds"),
    ("trainer.num_nodes", 1, False, "machines"),
)
GAN_INTEGERS: tuple[tuple[str, int, bool, str], ...] = (
    ("model.n_critic", 1, False, "discriminator steps per generator step"),
)
# Network sizes, by key name at any depth of model.* (also nested backbones and wrappers).
NET_INTEGERS = {"z_dim": 1, "w_dim": 1, "base_channels": 1, "max_channels": 1, "channel_base": 1,
                "mapping_layers": 1, "mbstd_group_size": 1, "num_kernels": 1, "kernel_dim": 1,
                "layerwise_epochs": 1, "pack": 1}
NET_NULLABLE = {"num_classes", "layerwise_epochs"}
NET_INTEGER_LISTS = ("hidden", "channels")
# Callback counts, by key name in any callbacks.<name> entry (values >= the minimum).
CALLBACK_INTEGERS = {"every_n_steps": 1, "num_samples": 1, "num_real": 1, "nrow": 1, "num_images": 1,
                     "num_pairs": 1, "num_steps": 1, "num_points": 1, "capacity": 1, "patience": 1,
                     "max_skips": 1, "check_weights_every_n_steps": 0, "refresh_rate": 0}
# Optimizer hyperparameters that must be finite and >= 0 (lr must be > 0; betas in [0, 1)).
OPTIMIZER_NONNEGATIVE = ("weight_decay", "eps", "momentum", "alpha", "dampening", "rho", "lr_decay",
                         "initial_accumulator_value")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _select(cfg: Any, path: str) -> Any:
    """The value at a dotted path, or _ABSENT; a broken interpolation is left to the code that uses it."""
    try:
        value = OmegaConf.select(cfg, path, default=_ABSENT, throw_on_missing=False)
    except OmegaConfBaseException:
        return _ABSENT
    return value


def require_integer(key: str, value: Any, minimum: int, nullable: bool = False, what: str = "") -> None:
    """A ConfigError unless ``value`` is an integer >= ``minimum`` (or null when ``nullable``).

    2.0 is refused too: Hydra reads it as a float, and the code behind would truncate or reject it."""
    if value is None and nullable:
        return
    if _is_int(value) and value >= minimum:
        return
    meaning = f" ({what})" if what else ""
    wanted = f"an integer >= {minimum}" + (" or null" if nullable else "")
    if isinstance(value, float) and value.is_integer():
        fix = f"write it without the decimal point: {key}={int(value)}"
    else:
        fix = f"e.g. {key}={max(minimum, 1)}"
    raise ConfigError(f"{key}={_show(value)}: must be {wanted}{meaning}; {fix}.")


def require_number(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                   low_open: bool = False, high_open: bool = False, nullable: bool = False,
                   example: str = "") -> None:
    """A ConfigError unless ``value`` is a finite number within the given bounds (or null when ``nullable``)."""
    if value is None and nullable:
        return
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low:g}"
    else:
        bounds = "a number"
    wanted = f"a finite number {bounds}".replace("a finite number a number", "a finite number")
    wanted += " or null" if nullable else ""
    raise ConfigError(f"{key}={_show(value)}: must be {wanted}" + (f"; e.g. {key}={example}" if example else "") + ".")


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(dotted path, key, value) of every entry of a nested config, depth first."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = _select(node, str(key))
            if value is _ABSENT:
                continue
            yield f"{path}.{key}", str(key), value
            yield from _walk(value, f"{path}.{key}")


def check_optimizer(prefix: str, node: Any) -> None:
    """Learning rate, betas and the other non-negative hyperparameters of one optimizer partial."""
    if not isinstance(node, DictConfig):
        return
    if "lr" in node:
        require_number(f"{prefix}.lr", _select(node, "lr"), 0.0, low_open=True, example="1e-4")
    if "betas" in node:
        betas = _select(node, "betas")
        ok = isinstance(betas, ListConfig) and len(betas) == 2
        ok = ok and all(_is_number(b) and math.isfinite(b) and 0.0 <= b < 1.0 for b in betas)
        if not ok:
            raise ConfigError(f"{prefix}.betas={_show(betas)}: must be two numbers in [0, 1); "
                              f"e.g. {prefix}.betas=[0.5,0.999].")
    for key in OPTIMIZER_NONNEGATIVE:
        if key in node:
            require_number(f"{prefix}.{key}", _select(node, key), 0.0, example="0")


def check_scheduler(prefix: str, node: Any) -> None:
    """The usual LR-scheduler arguments (StepLR, ExponentialLR, CosineAnnealingLR, ...)."""
    if not isinstance(node, DictConfig):
        return
    for key in ("step_size", "T_max", "T_0", "total_iters"):
        if key in node:
            require_integer(f"{prefix}.{key}", _select(node, key), 1)
    if "gamma" in node:
        require_number(f"{prefix}.gamma", _select(node, "gamma"), 0.0, low_open=True, example="0.5")
    if "eta_min" in node:
        require_number(f"{prefix}.eta_min", _select(node, "eta_min"), 0.0, example="0")


def _check_trainer_values(trainer: Any) -> None:
    if not isinstance(trainer, DictConfig):
        return
    fdr = _select(trainer, "fast_dev_run")
    if fdr is not _ABSENT and not isinstance(fdr, bool) and not (_is_int(fdr) and fdr >= 0):
        raise ConfigError(f"trainer.fast_dev_run={_show(fdr)}: must be true, false or a number of batches >= 0; "
                          "e.g. trainer.fast_dev_run=true (or debug=fdr).")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                "overfit_batches"):
        value = _select(trainer, key)
        if value is _ABSENT or value is None:
            continue
        if not ((_is_int(value) and value >= 0) or (isinstance(value, float) and 0.0 <= value <= 1.0)):
            raise ConfigError(f"trainer.{key}={_show(value)}: must be a share of the batches in [0.0, 1.0] or a "
                              f"number of batches >= 0; e.g. trainer.{key}=0.1 or trainer.{key}=10.")
    value = _select(trainer, "val_check_interval")
    if value is not _ABSENT and value is not None:
        if not ((_is_int(value) and value >= 1) or (isinstance(value, float) and 0.0 < value <= 1.0)):
            raise ConfigError(f"trainer.val_check_interval={_show(value)}: must be a share of an epoch in (0.0, 1.0] "
                              "or a number of batches >= 1; e.g. trainer.val_check_interval=0.5.")


def check_system(cfg: DictConfig) -> None:
    """The parts of the ``model`` node fit its system: an autoencoder has no adversarial loss and one
    optimizer, a GAN a loss and a G/D optimizer pair (the groups are placed into the node)."""
    model = _select(cfg, "model")
    if not isinstance(model, DictConfig):
        raise ConfigError("model is not set: choose a model, e.g. model=dcgan (conf/model/).")
    if is_autoencoder(cfg):
        if _select(cfg, "model.loss") not in (_ABSENT, None):
            raise ConfigError("An autoencoder (this model) has no adversarial loss: drop loss=... from the command "
                              "line; its reconstruction loss is model.reconstruction (bce | mse).")
        optimizer = _select(cfg, "model.optimizer")
        if isinstance(optimizer, DictConfig) and ("g" in optimizer or "d" in optimizer):
            raise ConfigError("An autoencoder (this model) trains one network with one optimizer: drop optimizer=... "
                              "from the command line (those files hold a G/D pair) and set model.optimizer.* "
                              "instead, e.g. model.optimizer.lr=3e-4.")
        return
    for key, example in (("loss", "loss=non_saturating"), ("optimizer", "optimizer=adam")):
        if _select(cfg, f"model.{key}") in (_ABSENT, None):
            raise ConfigError(f"This GAN has no model.{key}: choose one, e.g. {example}.")


def check_values(cfg: DictConfig) -> None:
    """Every known single value of the config, named by its path: types, sizes and ranges."""
    check_system(cfg)
    gan = not is_autoencoder(cfg)
    seed = _select(cfg, "seed")
    if seed is not _ABSENT:
        require_integer("seed", seed, 0, what="the random seed")
        if seed > 2**32 - 1:
            raise ConfigError(f"seed={seed}: must be at most {2**32 - 1} (numpy's limit); e.g. seed=42.")
    for path, minimum, nullable, what in TOP_INTEGERS + (GAN_INTEGERS if gan else ()):
        value = _select(cfg, path)
        if value is not _ABSENT:
            require_integer(path, value, minimum, nullable, what)

    model = _select(cfg, "model")
    for path, key, value in _walk(model, "model"):
        if key in NET_INTEGERS or key == "num_classes":
            require_integer(path, value, NET_INTEGERS.get(key, 1), key in NET_NULLABLE)
        elif key in NET_INTEGER_LISTS and isinstance(value, ListConfig):
            if not all(_is_int(v) and v >= 1 for v in value):
                raise ConfigError(f"{path}={_show(value)}: every entry must be an integer >= 1 (a layer's "
                                  f"width or channels); e.g. {path}=[128,256].")
        elif key == "optimizer":
            check_optimizer(path, value)
    value = _select(cfg, "dataset.value_range")
    if value is not _ABSENT and value is not None:
        items = list(value) if isinstance(value, ListConfig) else None
        ok = items is not None and len(items) == 2 and all(_is_number(v) and math.isfinite(v) for v in items)
        if not ok or not items[0] < items[1]:
            raise ConfigError(f"dataset.value_range={_show(value)} (it follows model.data_range): must be two "
                              "increasing numbers [lo, hi], the range of the generator's output; e.g. "
                              "model.data_range=[-1.0,1.0] for tanh, [0.0,1.0] for sigmoid.")

    callbacks = _select(cfg, "callbacks")
    for path, key, value in _walk(callbacks, "callbacks"):
        if key in CALLBACK_INTEGERS and path.count(".") == 2:
            require_integer(path, value, CALLBACK_INTEGERS[key])

    if gan:
        for net in ("g", "d"):
            check_optimizer(f"model.optimizer.{net}", _select(cfg, f"model.optimizer.{net}"))
            check_scheduler(f"model.scheduler.{net}", _select(cfg, f"model.scheduler.{net}"))
        value = _select(cfg, "model.scheduler_interval")
        if value is not _ABSENT and value not in ("epoch", "step"):
            raise ConfigError(f"model.scheduler_interval={_show(value)}: must be epoch (the schedulers step once an "
                              "epoch) or step (after every generator step).")
        for key in ("gp_weight", "r1_weight", "drift_weight"):
            value = _select(cfg, f"model.loss.{key}")
            if value is not _ABSENT:
                require_number(f"model.loss.{key}", value, 0.0, example="10.0 (0 switches it off)")
        value = _select(cfg, "model.loss.class_weight")
        if value is not _ABSENT:
            require_number("model.loss.class_weight", value, 0.0, low_open=True, example="1.0 (AC-GAN's class term)")
        value = _select(cfg, "model.loss.r1_interval")
        if value is not _ABSENT:
            require_integer("model.loss.r1_interval", value, 1)
            if value != 1 and _select(cfg, "model.loss.r1_weight") in (0, 0.0):
                raise ConfigError(f"model.loss.r1_interval={value} applies R1 lazily, but model.loss.r1_weight is 0 "
                                  "(no R1): set a weight, e.g. model.loss.r1_weight=5.")
        value = _select(cfg, "model.loss.clip_value")
        if value is not _ABSENT:
            require_number("model.loss.clip_value", value, 0.0, low_open=True, nullable=True, example="0.01")
        value = _select(cfg, "model.ema_decay")
        if value is not _ABSENT:
            require_number("model.ema_decay", value, 0.0, 1.0, low_open=True, high_open=True, nullable=True,
                           example="0.999 (null: no moving average)")
        for key in ("grad_clip_g", "grad_clip_d"):
            value = _select(cfg, f"model.{key}")
            if value is not _ABSENT:
                require_number(f"model.{key}", value, 0.0, low_open=True, nullable=True,
                               example="1.0 (null: no clipping)")

    _check_trainer_values(_select(cfg, "trainer"))
    # Lightning refuses a progress-bar callback on a Trainer without a bar, naming neither key.
    bar = _select(cfg, "callbacks.progress_bar")
    if _select(cfg, "trainer.enable_progress_bar") is False and bar not in (None, _ABSENT):
        raise ConfigError("trainer.enable_progress_bar=false while callbacks.progress_bar is set: switch both off "
                          "(add callbacks.progress_bar=null), or keep the bar.")
    _check_dataset_location(cfg)
    check_packing(cfg)


# Discriminators that score each sample against its own label: a packed input has several labels.
UNPACKABLE_DISCRIMINATORS = ("ProjectionDiscriminator", "AuxiliaryClassifierDiscriminator")


def check_packing(cfg: DictConfig) -> None:
    """PacGAN's ``model.discriminator.pack``: D judges groups of that many samples, so it must divide
    every batch size the run uses (else the first step, or the first batch at a new ProGAN resolution,
    fails inside D), and the per-sample label discriminators refuse it."""
    pack = _select(cfg, "model.discriminator.pack")
    if pack is _ABSENT or not _is_int(pack) or pack == 1:
        return  # absent: no packing; a non-integer was refused by check_values
    target = str(_select(cfg, "model.discriminator._target_") or "")
    if target.endswith(UNPACKABLE_DISCRIMINATORS):
        raise ConfigError(
            f"model.discriminator.pack={pack}: {target.rsplit('.', 1)[-1]} scores each sample against its own "
            "label and cannot judge packed samples; use model.discriminator.pack=1, or a concatenating "
            "conditional model (model=cgan_dcgan, model=cgan_mlp), which packs each sample with its label."
        )
    batch_size = _select(cfg, "dataset.batch_size")
    if _is_int(batch_size) and batch_size % pack:
        raise ConfigError(
            f"model.discriminator.pack={pack} does not divide dataset.batch_size={batch_size}: D judges groups "
            f"of {pack} samples. Use a multiple, e.g. dataset.batch_size={max(pack, batch_size - batch_size % pack)}, "
            "or another model.discriminator.pack."
        )
    if _select(cfg, "dataset.drop_last") is False:
        raise ConfigError(
            f"model.discriminator.pack={pack} with dataset.drop_last=false: the last, smaller batch of an epoch "
            f"need not be a multiple of {pack}. Set dataset.drop_last=true, or model.discriminator.pack=1."
        )
    sizes = _select(cfg, "callbacks.progressive.batch_sizes")
    if isinstance(sizes, DictConfig):
        # Resolution keys are ints, which a dotted-path select cannot reach: read the entries directly.
        entries = [(f"callbacks.progressive.batch_sizes.{key}", sizes.get(key)) for key in sizes.keys()]
    elif sizes is _ABSENT or sizes is None:
        entries = []
    else:
        entries = [("callbacks.progressive.batch_sizes", sizes)]
    for key, size in entries:
        if _is_int(size) and size % pack:
            raise ConfigError(
                f"model.discriminator.pack={pack} does not divide {key}={size} (the batch size ProGAN's growth "
                f"uses there): D judges groups of {pack} samples. Make every progressive batch size a multiple "
                f"of {pack}, or use another model.discriminator.pack."
            )


def _check_dataset_location(cfg: DictConfig) -> None:
    """A dataset that reads a folder needs one (the files themselves are checked when the data loads)."""
    target = str(_select(cfg, "dataset._target_") or "")
    if target.endswith("ImageFolderDataModule"):
        root = _select(cfg, "dataset.root")
        if root is None or (isinstance(root, str) and not root.strip()):
            raise ConfigError("dataset.root is not set: dataset=image_folder needs the folder of your images, e.g. "
                              "dataset.root=/path/to/images (png, jpg, ...; class sub-folders become labels).")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (or warn) for config values and combinations that cannot work as meant."""
    check_values(cfg)
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
                "model.grad_clip_d and/or model.grad_clip_g (gradient-norm clipping per network)."
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
