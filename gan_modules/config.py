"""Composing the project's Hydra config outside train.py (tests, evaluation, feature networks)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PROJECT_ROOT = CONF_DIR.parent


def register_resolvers() -> None:
    """``${project_root:}``: the folder holding train.py, so ./logs and ./data do not follow the shell's
    working directory (conf/paths/default.yaml)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


register_resolvers()


def compose_config(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config train.py would see for these command-line overrides (without hydra's own node)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


# Keys that moved into the ``model`` node when it became the whole training system, and AC-GAN's
# class-term settings, which moved from the network to the loss: the old path's beginning and the new one.
MOVED_KEYS = (("module.", "model."), ("optimizer.", "model.optimizer."), ("loss.", "model.loss."),
              ("scheduler.", "model.scheduler."), ("model.system.", "model."),
              ("model.discriminator.class_weight", "model.loss.class_weight"),
              ("model.discriminator.classify_fakes", "model.loss.classify_fakes"),
              ("augment.", "model.loss.augment."))


def moved_key_message(overrides: list[str]) -> str | None:
    """A message naming the new key for an override written with a key that has moved, else None
    (Hydra alone would say only that the key is not in the config)."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if "=" not in override and not override.startswith("~"):
            continue
        for old, new in MOVED_KEYS:
            if key.startswith(old):
                fixed = override.replace(old, new, 1)
                return (f"{override}: this setting has moved (the model node holds the whole training system: "
                        f"networks, optimizers, loss and its terms, settings); write {fixed}.")
    return None
