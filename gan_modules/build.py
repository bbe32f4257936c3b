"""Build the training system from a composed config, and check it fits the data before any work.

Used by ``train.py`` and, with the config saved in a checkpoint, by ``generate.py``.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from gan_modules.autoencoder import AutoencoderModule, validate_autoencoder_setup
from gan_modules.gan import GANModule
from gan_modules.nets.common import eval_mode
from gan_modules.nets.conditional import UNLABELLED_HELP, call_discriminator, call_generator


def system_class(model_cfg: DictConfig) -> type:
    """The training system a ``model`` config builds: its ``_target_``'s class (imported).

    Run configs written before the system became the ``model`` node have no ``_target_`` there: a GAN,
    or an autoencoder when they hold ``model.system``.
    """
    if "_target_" not in model_cfg:
        return AutoencoderModule if "system" in model_cfg else GANModule
    try:
        cls = get_class(str(model_cfg._target_))
    except Exception as err:  # an unknown module or name: say which key, not Hydra's internals
        raise ValueError(f"model._target_={model_cfg._target_} cannot be imported ({err}).") from None
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise ValueError(f"model._target_={model_cfg._target_} is not a LightningModule: the model node builds the "
                         "training system (gan_modules.gan.GANModule or gan_modules.autoencoder.AutoencoderModule).")
    return cls


def is_autoencoder(cfg: DictConfig) -> bool:
    """Whether ``cfg.model`` builds an autoencoder (model=stacked_ae, conv_ae, denoising_ae, vae)."""
    return issubclass(system_class(cfg.model), AutoencoderModule)


def build_module(cfg: DictConfig) -> GANModule | AutoencoderModule:
    """The training system for ``cfg``: the ``model`` node, built whole with its ``_target_`` (its
    networks, optimizer partials, a GAN's loss and schedulers are built on the way)."""
    if not is_autoencoder(cfg):
        _check_labelled(cfg)
    return instantiate(cfg.model)


def _check_labelled(cfg: DictConfig) -> None:
    """A conditional model (its generator config takes num_classes) on data without labels: say so
    before Hydra's instantiation error would bury the reason."""
    if "generator" in cfg.model and "num_classes" in cfg.model.generator and cfg.model.generator.num_classes is None:
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
    # A packing D (model.discriminator.pack=m, PacGAN) judges m samples at once: give it 2 groups.
    pack = int(getattr(discriminator, "pack", 1))
    labels = _check_classes(module.num_classes, datamodule)
    labels = None if labels is None else labels.repeat_interleave(pack)
    data_shape = tuple(datamodule.sample_shape)
    with eval_mode(generator), torch.no_grad():
        sample = call_generator(generator, torch.randn(2 * pack, generator.z_dim), labels)
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
        judged = call_discriminator(discriminator, sample, labels)
    logits = judged.logits
    if logits.shape != (2,):
        raise ValueError(
            f"The discriminator must return one logit per sample (per group of {pack} with packing; here shape "
            f"[2]); it returned {list(logits.shape)}."
        )
    if module.loss.augment is not None:
        module.loss.augment.check_data(data_shape)
    if judged.class_logits is None and (module.loss.classify_fakes or module.loss.class_weight != 1.0):
        raise ValueError(
            "model.loss.class_weight and model.loss.classify_fakes weigh an AC-GAN's class term, but this "
            "discriminator has no class head: leave them at their defaults, or use model=cgan_dcgan_acgan."
        )
    if module.loss.uses_input_gradient and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        warnings.warn(
            "A gradient penalty is used with BatchNorm in the discriminator: the penalty assumes each "
            "sample's gradient is independent of the batch. Prefer model.discriminator.norm=layer "
            "(or none) where the model has that option.",
            stacklevel=2,
        )
