"""Reading checkpoints written by train.py: weights-only loading and clear errors."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_modules.callbacks.run_config import CONFIG_KEY


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing code from it (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (train.py writes <run dir>/checkpoints/last.ckpt).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise ValueError(
            f"Checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "It may be truncated (a run killed while saving) or not a checkpoint of this project."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{path} is not a checkpoint written by this project's train.py: it lacks 'state_dict' or "
            f"'{CONFIG_KEY}' (the resolved config that rebuilds the model)."
        )
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any]) -> DictConfig:
    return OmegaConf.create(checkpoint[CONFIG_KEY])


def submodule_state(checkpoint: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The part of the module's state dict under ``prefix`` ('generator', 'discriminator')."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(head)}


def load_generator(path: str | Path) -> tuple[nn.Module, DictConfig]:
    """The trained generator (in eval mode) and the run config, from a checkpoint alone.

    When the run kept an EMA of the generator's weights, that average is returned; for a VAE, its
    decoder (which maps codings drawn from N(0, I) to images).
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint(path)
    cfg = checkpoint_config(checkpoint)
    if "system" in cfg.model:  # an autoencoder: only a VAE's decoder samples from a prior
        network = instantiate(cfg.model.network)
        if not hasattr(network, "decoder") or not hasattr(network.decoder, "z_dim"):
            raise ValueError(
                f"{path} holds a {type(network).__name__}, an autoencoder with no prior to sample from: "
                "train a variational autoencoder (model=vae) to generate samples."
            )
        network.load_state_dict(submodule_state(checkpoint, "network"))
        return network.decoder.eval(), cfg
    generator = instantiate(cfg.model.generator)
    ema = submodule_state(checkpoint, "generator_ema")
    generator.load_state_dict(ema or submodule_state(checkpoint, "generator"))
    return generator.eval(), cfg


def load_encoder(path: str | Path) -> nn.Module:
    """The trained encoder of an autoencoder checkpoint, for unsupervised pre-training.

    It maps images to codings (a VAE's posterior mean) and has ``out_features`` for stacked and
    variational autoencoders; its parameters are trainable, so a classifier built on it fine-tunes
    it (or freeze it with ``encoder.requires_grad_(False)``)::

        encoder = load_encoder("logs/train/runs/<time>/checkpoints/last.ckpt")
        classifier = nn.Sequential(encoder, nn.Linear(encoder.out_features, 10))
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint(path)
    cfg = checkpoint_config(checkpoint)
    if "system" not in cfg.model:
        raise ValueError(f"{path} is a GAN checkpoint; load_encoder needs an autoencoder's (model=stacked_ae, vae, ...).")
    network = instantiate(cfg.model.network)
    network.load_state_dict(submodule_state(checkpoint, "network"))
    return network.encoder
