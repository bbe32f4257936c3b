"""Reading checkpoints written by train.py: weights-only loading and clear errors."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_modules.callbacks.run_config import CONFIG_KEY


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing code from it (``weights_only=True``); a clear error for a
    missing, empty, truncated, text or foreign file."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"Checkpoint {path} is a folder; give a .ckpt file (e.g. {path / 'checkpoints' / 'last.ckpt'}).")
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (train.py writes <run dir>/checkpoints/last.ckpt).")
    if path.stat().st_size == 0:
        raise ValueError(f"Checkpoint {path} is an empty file (a run killed before its first save?); use another one.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a non-checkpoint (KeyError, IndexError, ...)
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"Checkpoint {path} cannot be read ({type(err).__name__}: {first_line}). It may be truncated (a run "
            "killed while saving), not a checkpoint at all, or hold objects other than tensors and plain values, "
            "which are never unpickled."
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) or \
            not isinstance(checkpoint.get(CONFIG_KEY), dict):
        raise ValueError(
            f"{path} is not a checkpoint written by this project's train.py: it lacks 'state_dict' or "
            f"'{CONFIG_KEY}' (the resolved config that rebuilds the model)."
        )
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path = "the checkpoint") -> DictConfig:
    try:
        cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    except Exception as err:
        raise ValueError(f"{path}: its run config cannot be read ({type(err).__name__}: {err}).") from err
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or not ("generator" in model or "network" in model):
        raise ValueError(
            f"{path}: its run config has no model.generator (or model.network, for an autoencoder), so the model "
            "cannot be rebuilt. Is it a checkpoint of this project's train.py?"
        )
    return cfg


def build_from_config(node: DictConfig, path: str | Path, key: str) -> nn.Module:
    """Instantiate a (checked) network config; a config the class refuses is a clear error."""
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except Exception as err:
        cause = err.__cause__ or err
        raise ValueError(f"{path}: its config's {key} cannot be built ({type(cause).__name__}: {cause}).") from err


def load_weights(network: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> nn.Module:
    """``load_state_dict`` with an error that says how the checkpoint and its own config disagree."""
    if not state:
        raise ValueError(f"{path} holds no weights for the {what} (no '{what}.' keys in its state_dict).")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        expected = network.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        details = "; ".join(f"{label}: {', '.join(keys[:4])}" + (" ..." if len(keys) > 4 else "")
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("other shapes", shapes)) if keys)
        raise ValueError(
            f"{path}: the {what}'s weights do not fit the model its own config builds ({details or err}). "
            "The file was edited or assembled from different runs; use the checkpoint as train.py wrote it."
        ) from err
    for name, tensor in network.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"{path}: the {what}'s weight {name} holds NaN or Inf values, so every sample would be garbage. "
                "Use an earlier checkpoint of the run (checkpoints/epochNNN.ckpt) from before training diverged."
            )
    return network


# Loading a checkpoint instantiates what its config names (the model, and the dataset for evaluation):
# a checkpoint from elsewhere could name any importable callable, e.g. a function that writes files.
# Only the classes below are built without the user's explicit say-so. A `_target_` is resolved by
# importing nothing but the modules listed here and is then compared, as an object, with the allowlist:
# `gan_modules.training.Path.write_text` or `gan_modules.nets.dcgan.torch.save` are refused although
# their names begin like the project's.
ALLOWED_MODULES = (
    "gan_modules.nets.mlp", "gan_modules.nets.dcgan", "gan_modules.nets.dcgan_seed", "gan_modules.nets.conditional",
    "gan_modules.nets.progan", "gan_modules.nets.stylegan", "gan_modules.nets.stylegan2", "gan_modules.nets.autoencoders",
    "datamodules.idx", "datamodules.cifar10", "datamodules.digits", "datamodules.image_folder", "datamodules.toy2d",
    "datamodules.image_zip", "datamodules.streaming",
    "gan_modules.losses", "gan_modules.objectives", "gan_modules.augment", "gan_modules.gan", "gan_modules.autoencoder",
    "torch.optim", "torch.optim.lr_scheduler",
)
# The sections of a run config that loading a checkpoint builds (generate.py, evaluate.py, load_encoder).
BUILT_SECTIONS = ("model", "dataset")


class UntrustedCheckpointError(ValueError):
    """A checkpoint whose config would build something outside the allowlist."""


@functools.lru_cache(maxsize=1)
def allowed_objects() -> frozenset:
    """The classes a checkpoint may build: the project's networks, datamodules, loss and training
    systems (each defined in one of ``ALLOWED_MODULES``), torch's optimizers and LR schedulers."""
    import importlib

    from torch import nn

    from datamodules.base import GANDataModule
    from gan_modules.objectives import GANLoss, Term

    allowed = set()
    for name in ALLOWED_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if not isinstance(value, type):
                continue
            if name.startswith("torch.optim"):
                if issubclass(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)) and \
                        value.__module__.startswith(name):
                    allowed.add(value)
            elif value.__module__ == name and issubclass(value, (nn.Module, GANDataModule, pl.LightningModule, GANLoss, Term)):
                allowed.add(value)
    return frozenset(allowed)


def resolve_allowed(target: Any) -> Any | None:
    """The allowlisted class ``target`` names, or None; imports only ``ALLOWED_MODULES``."""
    import importlib

    if not isinstance(target, str):
        return None
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        if module_name not in ALLOWED_MODULES:
            continue
        obj: Any = importlib.import_module(module_name)
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
            if obj is None:
                return None
        return obj if obj in allowed_objects() else None
    return None


def foreign_targets(cfg: DictConfig, sections: tuple[str, ...] = BUILT_SECTIONS) -> list[str]:
    """Every ``_target_`` in ``sections`` of a run config (at any depth: nested configs, ``_args_``
    lists, keyword values) that is not on the allowlist, and any interpolation there (a checkpoint's
    config is stored resolved, so ``${...}`` would only be an attempt to read the environment)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "_target_" in node and resolve_allowed(node["_target_"]) is None:
                found.add(str(node["_target_"]))
            for key, value in node.items():
                visit(key)
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)
        elif isinstance(node, str) and "${" in node:
            found.add(f"the interpolation {node!r}")

    for section in sections:
        if section in cfg:
            visit(OmegaConf.to_container(cfg[section], resolve=False))
    return sorted(found)


def trusted_config(checkpoint: dict[str, Any], path: str | Path, trust: bool) -> DictConfig:
    """The checkpoint's run config, refused when it would build anything outside the allowlist."""
    cfg = checkpoint_config(checkpoint, path)
    foreign = foreign_targets(cfg)
    if foreign and not trust:
        raise UntrustedCheckpointError(
            f"{path} asks to build {', '.join(foreign)}, which lies outside this project's networks and datasets: "
            "loading it would import and run that code. If you wrote or trust this checkpoint (e.g. your own "
            "model class), pass trust_checkpoint=true."
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
    checkpoint = load_checkpoint(path)
    cfg = trusted_config(checkpoint, path, trust)
    from gan_modules.build import is_autoencoder  # (after the allowlist check above: it imports the target)

    if is_autoencoder(cfg):  # only a VAE's decoder samples from a prior
        network = build_from_config(cfg.model.network, path, "model.network")
        if not hasattr(network, "decoder") or not hasattr(network.decoder, "z_dim"):
            raise ValueError(
                f"{path} holds a {type(network).__name__}, an autoencoder with no prior to sample from: "
                "train a variational autoencoder (model=vae) to generate samples."
            )
        load_weights(network, submodule_state(checkpoint, "network"), path, "network")
        return network.decoder.eval(), cfg
    generator = build_from_config(cfg.model.generator, path, "model.generator")
    ema = submodule_state(checkpoint, "generator_ema")
    load_weights(generator, ema or submodule_state(checkpoint, "generator"), path,
                 "generator_ema" if ema else "generator")
    return generator.eval(), cfg


def load_encoder(path: str | Path, trust: bool = False) -> nn.Module:
    """The trained encoder of an autoencoder checkpoint, for unsupervised pre-training.

    It maps images to codings (a VAE's posterior mean) and has ``out_features`` for stacked and
    variational autoencoders; its parameters are trainable, so a classifier built on it fine-tunes
    it (or freeze it with ``encoder.requires_grad_(False)``)::

        encoder = load_encoder("logs/train/runs/<time>/checkpoints/last.ckpt")
        classifier = nn.Sequential(encoder, nn.Linear(encoder.out_features, 10))
    """
    checkpoint = load_checkpoint(path)
    cfg = trusted_config(checkpoint, path, trust)
    from gan_modules.build import is_autoencoder  # (after the allowlist check above: it imports the target)

    if not is_autoencoder(cfg):
        raise ValueError(f"{path} is a GAN checkpoint; load_encoder needs an autoencoder's (model=stacked_ae, vae, ...).")
    network = build_from_config(cfg.model.network, path, "model.network")
    load_weights(network, submodule_state(checkpoint, "network"), path, "network")
    return network.encoder
