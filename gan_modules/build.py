"""Build the training system from a composed config, and check it fits the data before any work.

Used by ``train.py`` and, with the config saved in a checkpoint, by ``generate.py``.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from gan_modules.autoencoder import AutoencoderModule, validate_autoencoder_setup
from gan_modules.gan import GANModule
from gan_modules.nets.common import eval_mode
from gan_modules.nets.conditional import UNLABELLED_HELP, call_discriminator, call_generator


def is_autoencoder(cfg: DictConfig) -> bool:
    """Autoencoder model configs (model=stacked_ae, conv_ae, denoising_ae, vae) carry their own ``system``."""
    return "system" in cfg.model


def build_generator(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.model.generator)


def build_module(cfg: DictConfig) -> GANModule | AutoencoderModule:
    """The training system for ``cfg``.

    A GAN: the GANModule described by ``cfg.model`` (networks), ``cfg.loss``, ``cfg.optimizer`` and
    ``cfg.module``. An autoencoder: ``cfg.model.system`` (its optimizer included) around
    ``cfg.model.network``; the GAN-only groups (loss, optimizer, module) are then unused.
    """
    if is_autoencoder(cfg):
        return instantiate(cfg.model.system, network=instantiate(cfg.model.network))
    _check_labelled(cfg)
    scheduler = cfg.get("scheduler") or {}
    return instantiate(
        cfg.module,
        generator=build_generator(cfg),
        discriminator=instantiate(cfg.model.discriminator),
        loss=instantiate(cfg.loss),
        optimizer_g=instantiate(cfg.optimizer.g),
        optimizer_d=instantiate(cfg.optimizer.d),
        scheduler_g=instantiate(scheduler.get("g")) if scheduler.get("g") else None,
        scheduler_d=instantiate(scheduler.get("d")) if scheduler.get("d") else None,
        _recursive_=False,
    )


def _check_labelled(cfg: DictConfig) -> None:
    """A conditional model (its generator config takes num_classes) on data without labels: say so
    before Hydra's instantiation error would bury the reason."""
    if "num_classes" in cfg.model.generator and cfg.model.generator.num_classes is None:
        raise ValueError(f"The model is conditional but dataset.num_classes is null: the data have no labels. "
                         f"{UNLABELLED_HELP}")


def _describe_range(value_range: Any) -> str:
    return "unbounded (no output activation)" if value_range is None else f"[{value_range[0]:g}, {value_range[1]:g}]"


def _check_classes(num_classes: int | None, datamodule: Any) -> torch.Tensor | None:
    """For a conditional model: the data must have labels, as many classes as the model; returns test labels."""
    if num_classes is None:
        return None
    data_classes = datamodule.num_classes
    if data_classes is None:
        raise ValueError(f"The model is conditional ({num_classes} classes) but {type(datamodule).__name__} serves "
                         f"unlabelled data. {UNLABELLED_HELP}")
    if data_classes != num_classes:
        raise ValueError(f"The model is conditional with {num_classes} classes but the data have {data_classes}: "
                         f"set dataset.num_classes={data_classes}.")
    return torch.tensor([0, num_classes - 1])


def validate_setup(module: GANModule | AutoencoderModule, datamodule: Any) -> None:
    """Raise a clear error when the networks cannot work on this data; runs in milliseconds."""
    if isinstance(module, AutoencoderModule):
        validate_autoencoder_setup(module, datamodule)
        return
    generator, discriminator = module.generator, module.discriminator
    labels = _check_classes(module.num_classes, datamodule)
    data_shape = tuple(datamodule.sample_shape)
    with eval_mode(generator), torch.no_grad():
        sample = call_generator(generator, torch.randn(2, generator.z_dim), labels)
    if tuple(sample.shape[1:]) != data_shape:
        raise ValueError(
            f"The generator makes samples of shape {list(sample.shape[1:])} but the dataset gives "
            f"{list(data_shape)}. The model configs read the shape from dataset.shape; if you set "
            "model.generator.out_shape (or a size) yourself, make it match, or resize the data."
        )
    data_range = datamodule.value_range
    data_range = None if data_range is None else tuple(float(v) for v in data_range)
    g_range = generator.output_range
    if (g_range is None) != (data_range is None) or (g_range is not None and tuple(g_range) != data_range):
        raise ValueError(
            f"The generator's output range is {_describe_range(g_range)} but the data are scaled to "
            f"{_describe_range(data_range)}. Make them agree: set dataset.value_range to the generator's "
            "range (tanh -> [-1, 1], sigmoid -> [0, 1]) or change model.generator.output_activation."
        )
    with eval_mode(discriminator), torch.no_grad():
        logits = call_discriminator(discriminator, sample, labels).logits
    if logits.shape != (2,):
        raise ValueError(
            f"The discriminator must return one logit per sample (shape [batch]); it returned {list(logits.shape)}."
        )
    if module.loss.uses_input_gradient and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        warnings.warn(
            "A gradient penalty is used with BatchNorm in the discriminator: the penalty assumes each "
            "sample's gradient is independent of the batch. Prefer model.discriminator.norm=layer "
            "(or none) where the model has that option.",
            stacklevel=2,
        )
