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


# Loading a checkpoint instantiates the classes its config names (the model, and the dataset for
# evaluation): a checkpoint from elsewhere could name any importable callable. Only these are built
# without the user's explicit say-so.
TRUSTED_TARGET_PREFIXES = ("gan_modules.", "datamodules.", "torch.", "torchvision.", "pytorch_lightning.")


def foreign_targets(cfg: DictConfig, sections: tuple[str, ...] = ("model", "dataset")) -> list[str]:
    """The ``_target_``s in ``sections`` of a run config that lie outside this project and torch."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and not target.startswith(TRUSTED_TARGET_PREFIXES):
                found.add(target)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for section in sections:
        if section in cfg:
            visit(OmegaConf.to_container(cfg[section], resolve=False))
    return sorted(found)


def trusted_config(checkpoint: dict[str, Any], path: str | Path, trust: bool) -> DictConfig:
    """The checkpoint's run config, refused when it would build classes from outside the project."""
    cfg = checkpoint_config(checkpoint)
    foreign = foreign_targets(cfg)
    if foreign and not trust:
        raise ValueError(
            f"{path} asks to build {', '.join(foreign)}, which lie outside this project: loading it would "
            "import and run that code. If you wrote or trust this checkpoint (e.g. your own model), pass "
            "trust_checkpoint=true."
        )
    return cfg


def submodule_state(checkpoint: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The part of the module's state dict under ``prefix`` ('generator', 'discriminator')."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(head)}


def load_generator(path: str | Path, trust: bool = False) -> tuple[nn.Module, DictConfig]:
    """The trained generator (in eval mode) and the run config, from a checkpoint alone.

    When the run kept an EMA of the generator's weights, that average is returned; for a VAE, its
    decoder (which maps codings drawn from N(0, I) to images). Weights load without executing code;
    a config naming classes outside the project is refused unless ``trust`` (see ``trusted_config``).
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint(path)
    cfg = trusted_config(checkpoint, path, trust)
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


def load_encoder(path: str | Path, trust: bool = False) -> nn.Module:
    """The trained encoder of an autoencoder checkpoint, for unsupervised pre-training.

    It maps images to codings (a VAE's posterior mean) and has ``out_features`` for stacked and
    variational autoencoders; its parameters are trainable, so a classifier built on it fine-tunes
    it (or freeze it with ``encoder.requires_grad_(False)``)::

        encoder = load_encoder("logs/train/runs/<time>/checkpoints/last.ckpt")
        classifier = nn.Sequential(encoder, nn.Linear(encoder.out_features, 10))
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint(path)
    cfg = trusted_config(checkpoint, path, trust)
    if "system" not in cfg.model:
        raise ValueError(f"{path} is a GAN checkpoint; load_encoder needs an autoencoder's (model=stacked_ae, vae, ...).")
    network = instantiate(cfg.model.network)
    network.load_state_dict(submodule_state(checkpoint, "network"))
    return network.encoder
