"""Model folders in the Hugging Face Hub's layout: a trained generator that loads without this
project's checkpoints and without pickle.

    python export.py checkpoint=<run>/checkpoints/last.ckpt format=hub output=my_model
    >>> from gan_modules.hub import load
    >>> generator = load("my_model")
    >>> images = generator.sample(16, seed=0)      # (16, C, H, W) floats in generator.data_range

A folder holds ``model.safetensors`` (the sampling generator's state dict: the EMA copy where the run
kept one, a VAE's decoder), ``config.json`` (the ``_target_`` config that rebuilds the network, the
facts a user needs, and the sha256 of the weights file), ``README.md`` (a model card: data, recipe,
training length, metrics with their protocol, how to load it) and ``samples.png`` (a fixed-seed grid).

Loading trusts nothing in the folder: config.json is parsed as JSON, the network is built only from
a ``_target_`` on the checkpoint allowlist (``gan_modules.checkpoints``) unless ``trust=True``, and
the weights file must match the sha256 that config.json records before safetensors reads it.

:class:`HubGenerator` (what ``load`` returns) is a ``huggingface_hub.ModelHubMixin``: ``save_pretrained``,
``push_to_hub`` and ``HubGenerator.from_pretrained(folder or repo id)`` work as for other Hub
libraries; ``from_pretrained`` downloads the same files and goes through ``load``.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from huggingface_hub import ModelCardData, ModelHubMixin
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gan_modules.atomic_files import OutputPathError, atomic_write_bytes, atomic_write_text, check_parent_folder
from gan_modules.checkpoints import (UntrustedCheckpointError, build_from_config, foreign_targets, load_checkpoint,
                                     load_generator, load_weights)
from gan_modules.images import save_grid
from gan_modules.nets.conditional import check_labels, cycling_labels, is_conditional
from gan_modules.sampling import chunked_latents, sample_in_batches
from gan_modules.style_sampling import Truncated, is_style_based

PROJECT = "gan-lightning"
FORMAT = "gan-lightning-generator"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, SAMPLES_FILE)
GRID_SEED = 0
GRID_ROWS = 8
GRID_MAX_CLASSES = 16  # a conditional grid shows classes 0..15 of a model with more
LATENT_CHUNK = 500  # generate.py's default batch_size: the same seed gives the same z as generate.py


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded as it is; the message names the file and the fix."""


class WeightsHashError(ModelFolderError):
    """model.safetensors differs from the file that config.json was written for."""


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PROJECT)
    except PackageNotFoundError:
        return "unknown"


# --- sampling -----------------------------------------------------------------------------------
@torch.no_grad()
def sample_images(network: nn.Module, n: int, seed: int = 0, labels: Sequence[int] | Tensor | None = None,
                  truncation_psi: float = 1.0) -> Tensor:
    """``n`` images ``(n, C, H, W)``, float32 on the CPU in the network's data range, fixed by ``seed``.

    z is drawn as generate.py draws it (``chunked_latents``); a conditional network gets ``labels``
    (default: 0, 1, ..., K-1, 0, ..., one class per column of a K-wide grid); a style-based one takes
    ``truncation_psi``, and its per-layer noise is drawn from ``seed`` too, so the same call always
    gives the same images. The global random state is left as it was.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:  # 2.5 images must not become 2
        raise ValueError(f"sample takes a whole number of images n >= 1, got {n!r}.")
    device = next(iter(network.parameters()), torch.empty(0)).device
    conditional = is_conditional(network)
    if labels is not None and not conditional:
        raise ValueError("labels= needs a conditional model; this generator is unconditional (num_classes is None).")
    if conditional:
        label_tensor = cycling_labels(n, network.num_classes) if labels is None else \
            check_labels(torch.as_tensor(labels, dtype=torch.long).flatten(), network.num_classes)
        if len(label_tensor) != n:
            raise ValueError(f"labels has {len(label_tensor)} entries for n={n} images; give one label per image.")
    else:
        label_tensor = None
    if truncation_psi != 1.0:
        network = Truncated(network, float(truncation_psi))  # a clear error for a generator without styles
    z = chunked_latents(n, int(network.z_dim), int(seed), LATENT_CHUNK)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))  # the style noise of StyleGAN layers
        return sample_in_batches(network, z, label_tensor, LATENT_CHUNK, device)


def grid_layout(network: nn.Module) -> tuple[int, int, list[int] | None]:
    """(images, images per row, labels) of the card's sample grid: 8 x 8, or one class per column
    (the first ``GRID_MAX_CLASSES`` classes)."""
    if is_conditional(network):
        columns = min(int(network.num_classes), GRID_MAX_CLASSES)
        return GRID_ROWS * columns, columns, [i % columns for i in range(GRID_ROWS * columns)]
    return GRID_ROWS * 8, 8, None


class HubGenerator(nn.Module, ModelHubMixin, library_name=PROJECT,
                   tags=["gan-lightning", "image-generation", "pytorch", "safetensors"]):
    """A loaded generator: ``forward(z[, labels])`` as the network's, plus ``z_dim``, ``num_classes``
    (None: unconditional), ``data_range`` (of the images it returns), ``image_shape``, ``style_based``
    and :meth:`sample`. ``network`` is the project's network itself (for the style API of StyleGAN:
    ``network.map``, ``network.synthesis``, ...); ``config`` is config.json's content."""

    def __init__(self, network: nn.Module, config: dict) -> None:
        super().__init__()
        self.network = network.eval()
        self.config = config
        self.z_dim = int(network.z_dim)
        self.num_classes = int(network.num_classes) if is_conditional(network) else None
        self.takes_labels = self.num_classes is not None  # the project's sampling code reads these two
        self.out_shape = tuple(config["image_shape"])
        self.data_range = tuple(config["data_range"]) if config.get("data_range") is not None else None
        self.output_range = self.data_range  # the name the project's sampling code reads
        self.image_shape = tuple(config["image_shape"])
        self.style_based = bool(config.get("style_based", False))
        self.model_card: str | None = None  # the folder's README.md, kept for save_pretrained
        self.eval()

    def forward(self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        network = self.network if truncation_psi == 1.0 else Truncated(self.network, truncation_psi)
        return network(z) if labels is None else network(z, labels)

    def sample(self, n: int, seed: int = 0, labels: Sequence[int] | Tensor | None = None,
               truncation_psi: float = 1.0) -> Tensor:
        """``n`` images ``(n, C, H, W)`` (float32, CPU, in ``data_range``); see :func:`sample_images`."""
        return sample_images(self.network, n, seed, labels, truncation_psi)

    # --- huggingface_hub --------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the folder's four files into ``save_directory`` (one file at a time, each atomic;
        ``save_model_folder`` replaces a whole folder atomically)."""
        save_directory = Path(save_directory)
        config = write_weights_and_config(self.network, dict(self.config), save_directory)
        write_sample_grid(self.network, config, save_directory)
        card = self.model_card or minimal_card(config)
        atomic_write_text(save_directory / CARD_FILE, card)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         trust: bool = False, network: Any = None, config: Any = None) -> "HubGenerator":
        """A local folder, or a Hub repo downloaded to the cache, through :func:`load`.

        ``network`` and ``config`` are what ModelHubMixin.from_pretrained read from config.json for
        the parameters of ``__init__``: plain JSON, dropped unused, because ``load`` reads and checks
        the file itself (allowlist, sha256). ``trust`` comes from the caller only: ``__init__`` has no
        ``**kwargs``, so the mixin passes no other key of config.json on.
        """
        del network, config
        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                            force_download=force_download, local_files_only=local_files_only,
                                            token=token, allow_patterns=list(FOLDER_FILES)))
        return load(folder, trust=trust)


# --- loading ------------------------------------------------------------------------------------
def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: it is not a model folder written by "
                                "`python export.py ... format=hub` (or it was copied incompletely).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{path} is not valid JSON ({err}); export the folder again.") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFolderError(f"{path} is not the config of a {PROJECT} model folder (its \"format\" is not "
                               f"{FORMAT!r}); export the model with `python export.py ... format=hub`.")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFolderError(f"{path} has format_version {version!r}; this code reads versions up to "
                               f"{FORMAT_VERSION}. Update {PROJECT} to load it.")
    problems = [key for key, kind in (("network", dict), ("z_dim", int), ("image_shape", list), ("weights", dict))
                if not isinstance(config.get(key), kind)]
    if not problems and not isinstance(config["weights"].get("sha256"), str):
        problems.append("weights.sha256")
    if problems:
        raise ModelFolderError(f"{path} lacks or mangles {', '.join(problems)}; export the folder again.")
    return config


NETWORK_PACKAGE = "gan_modules.nets."


def non_network_targets(node: Any) -> list[str]:
    """``_target_``s (at any depth) that the checkpoint allowlist accepts but that are not network
    classes of ``gan_modules.nets``: a model folder builds a generator, never a datamodule, loss or
    training system."""
    from gan_modules.checkpoints import resolve_allowed

    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if "_target_" in value:
                obj = resolve_allowed(value["_target_"])
                if obj is not None and not (isinstance(obj, type) and issubclass(obj, nn.Module)
                                            and obj.__module__.startswith(NETWORK_PACKAGE)):
                    found.add(str(value["_target_"]))
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(node)
    return sorted(found)


def check_network_config(config: dict[str, Any], folder: Path, trust: bool) -> DictConfig:
    """config.json's network node, refused when it names anything outside the allowlist (the
    checkpoint allowlist, narrowed to the network classes), before anything it names is imported."""
    try:
        node = OmegaConf.create({"network": config["network"]})
    except Exception as err:  # OmegaConf raises its own types for keys it cannot hold
        raise ModelFolderError(f"{folder / CONFIG_FILE}: its network config cannot be read ({err}); export the "
                               "folder again.") from err
    foreign = sorted(set(foreign_targets(node, sections=("network",))) | set(non_network_targets(config["network"])))
    if foreign and not trust:
        raise UntrustedCheckpointError(
            f"{folder / CONFIG_FILE} asks to build {', '.join(foreign)}, which lies outside this project's networks: "
            "loading it would import and run that code. If you wrote or trust this folder (e.g. your own model "
            "class), pass trust=True to load() or from_pretrained()."
        )
    return node.network


def verified_weights(folder: Path, config: dict[str, Any]) -> dict[str, Tensor]:
    """model.safetensors, read only after its sha256 matched config.json's."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE} (the generator's weights); copy or download the "
                                "whole folder, or export it again.")
    data = path.read_bytes()
    expected, actual = config["weights"]["sha256"].lower(), hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise WeightsHashError(
            f"{path} does not match the sha256 that {CONFIG_FILE} records (expected {expected[:16]}..., the file has "
            f"{actual[:16]}...): it was changed or damaged after export, or downloaded incompletely. It is not "
            "loaded. Download the folder again or export it anew from the checkpoint; do not load weights you "
            "cannot vouch for."
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ModelFolderError(f"{path} cannot be read as a safetensors file ({type(err).__name__}: {err}); it "
                               "matches config.json's hash, so the folder was written that way: export it again.") from err


def load(path: str | os.PathLike, trust: bool = False) -> HubGenerator:
    """The generator of a model folder, in eval mode (see :class:`HubGenerator`). Never unpickles:
    JSON, safetensors, and a network built from an allowlisted ``_target_`` (``trust=True`` allows
    any: only for folders you wrote or trust)."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"Model folder {folder} does not exist (export.py ... format=hub output=DIR writes one).")
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file; give the model folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}.")
    config = read_config(folder)
    node = check_network_config(config, folder, trust)  # before anything is imported or read
    state = verified_weights(folder, config)
    network = build_from_config(node, folder / CONFIG_FILE, "network")
    if not isinstance(network, nn.Module):
        raise ModelFolderError(f"{folder / CONFIG_FILE}: its network builds a {type(network).__name__}, not a network.")
    try:
        load_weights(network, state, folder / WEIGHTS_FILE, "generator")
    except ValueError as err:
        raise ModelFolderError(f"{err} (For a model folder: download it again, or export it anew with "
                               "`python export.py checkpoint=... format=hub`.)") from err
    mismatched = [f"{key}={config.get(key)!r} (the network has {value!r})"
                  for key, value in (("z_dim", int(getattr(network, "z_dim", -1))),
                                     ("num_classes", network.num_classes if is_conditional(network) else None))
                  if config.get(key) != value]
    if mismatched:
        raise ModelFolderError(f"{folder / CONFIG_FILE} says {'; '.join(mismatched)}: the file was edited. "
                               "Export the folder again.")
    generator = HubGenerator(network, config)
    card = folder / CARD_FILE
    if card.is_file():
        generator.model_card = card.read_text(encoding="utf-8", errors="replace")
    return generator


# --- writing ------------------------------------------------------------------------------------
def write_weights_and_config(network: nn.Module, config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """model.safetensors and config.json (with the sha256 of exactly the bytes written)."""
    from safetensors.torch import save as save_safetensors

    # Clones: safetensors refuses tensors that share storage, and the file must hold plain copies.
    state = {k: v.detach().cpu().clone().contiguous() for k, v in network.state_dict().items()}
    data = save_safetensors(state, metadata={"format": "pt"})
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    config["weights"] = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return config


def write_sample_grid(network: nn.Module, config: dict[str, Any], folder: Path) -> Path:
    n, nrow, labels = grid_layout(network)
    images = sample_images(network, n, GRID_SEED, labels)
    return save_grid(images, folder / SAMPLES_FILE, config.get("data_range"), nrow=nrow)


def check_output_folder(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that cannot be written or must not be replaced."""
    if output.name in ("", ".", ".."):
        raise OutputPathError(f"output={output} is not a folder name; give a new folder, e.g. output=my_model.")
    if output.exists() or output.is_symlink():
        if not output.is_dir() or output.is_symlink():
            raise OutputPathError(f"output={output} exists and is not a folder; choose a new folder name.")
        if not overwrite:
            raise OutputPathError(f"output={output} already exists; choose a new folder, or pass overwrite=True "
                                  "(export.py: overwrite=true) to replace it.")
        contents = {p.name for p in output.iterdir()}
        if contents and CONFIG_FILE not in contents:
            # overwrite replaces a model folder, never an arbitrary folder of the user's
            raise OutputPathError(f"output={output} is a folder that is not a model folder (no {CONFIG_FILE}); it is "
                                  "not replaced even with overwrite. Choose a new folder name.")
    check_parent_folder(output, "output")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0


def install_folder(staged: Path, output: Path, overwrite: bool) -> None:
    """Move the complete ``staged`` folder to ``output``. An existing ``output`` (overwrite) is swapped
    out atomically where the system allows, else parked, replaced and only then deleted; on failure
    the old folder is put back."""
    if not output.exists():
        try:
            os.rename(staged, output)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not overwrite:
                raise OutputPathError(f"output={output} could not be created ({err.strerror}); nothing was written "
                                      "there.") from err
    if _exchange(staged, output):
        shutil.rmtree(staged, ignore_errors=True)  # now the old folder
        return
    parked = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", suffix=".tmp", dir=output.parent))
    os.rename(output, parked / output.name)
    try:
        os.rename(staged, output)
    except BaseException:
        os.rename(parked / output.name, output)
        parked.rmdir()
        raise
    shutil.rmtree(parked, ignore_errors=True)


def save_model_folder(checkpoint: Path, output: Path, trust: bool = False, overwrite: bool = False) -> Path:
    """Write the model folder of a checkpoint's sampling generator to ``output``; returns ``output``.

    Everything is written to a temporary folder beside ``output`` and renamed into place when
    complete: an existing ``output`` is refused unless ``overwrite`` (and then only when it is a
    model folder or empty), and is never removed before the new folder is complete.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    check_output_folder(output, overwrite)
    network, run_cfg = load_generator(checkpoint, trust)
    raw = load_checkpoint(checkpoint)  # the training counters and callback states, for the card
    config = folder_config(network, run_cfg, raw, checkpoint)
    rebuilt = build_from_config(OmegaConf.create(config["network"]), checkpoint, "the exported network config")
    load_weights(rebuilt, network.state_dict(), checkpoint, "generator")  # what load() will do, checked now

    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        config = write_weights_and_config(network, config, staged)
        write_sample_grid(network, config, staged)
        atomic_write_text(staged / CARD_FILE, model_card(config, run_cfg, raw, checkpoint, network))
        os.chmod(staged, 0o755)  # mkdtemp makes it private; a model folder is an ordinary folder
        install_folder(staged, output, overwrite)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return output


# --- what the folder says about the model ---------------------------------------------------------
def network_config(network: nn.Module, run_cfg: DictConfig) -> dict[str, Any]:
    """The resolved ``_target_`` config that rebuilds ``network`` alone: the generator's, or for a
    VAE the decoder's (built from the VAE's settings, with the VAE's defaults for keys it leaves out)."""
    from gan_modules.build import is_autoencoder

    if not is_autoencoder(run_cfg):
        return OmegaConf.to_container(run_cfg.model.generator, resolve=True)
    from gan_modules.nets.autoencoders import VAE, VAEDecoder

    vae_cfg = OmegaConf.to_container(run_cfg.model.network, resolve=True)
    defaults = {name: p.default for name, p in inspect.signature(VAE.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    settings = {**defaults, **{k: v for k, v in vae_cfg.items() if not k.startswith("_")}}
    if not isinstance(network, VAEDecoder):
        raise ValueError(f"Only a VAE's decoder can be exported from an autoencoder; this one is {type(network).__name__}.")
    return {"_target_": f"{VAEDecoder.__module__}.{VAEDecoder.__qualname__}", "z_dim": int(settings["z_dim"]),
            "hidden": [int(h) for h in reversed(list(settings["hidden"]))], "out_shape": list(settings["in_shape"]),
            "activation": settings["activation"], "output_activation": settings["output_activation"]}


def folder_config(network: nn.Module, run_cfg: DictConfig, raw: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    probe = sample_images(network, 1)
    if probe.dim() != 4:
        raise ValueError(f"{checkpoint}: its generator makes vectors of shape {list(probe.shape[1:])}, not images; "
                         "model folders (format=hub) hold image generators.")
    data_range = OmegaConf.select(run_cfg, "model.data_range") or getattr(network, "output_range", None)
    lengths = training_length(raw, run_cfg)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": {"name": PROJECT, "version": project_version()},
        "network": network_config(network, run_cfg),
        "z_dim": int(network.z_dim),
        "num_classes": int(network.num_classes) if is_conditional(network) else None,
        "data_range": None if data_range is None else [float(v) for v in data_range],
        "image_shape": list(probe.shape[1:]),
        "style_based": is_style_based(network),
        "kind": "vae_decoder" if "network" in run_cfg.model and "generator" not in run_cfg.model else "gan_generator",
        "source": {"checkpoint": checkpoint.name, "weights": weights_source(raw, run_cfg),
                   **{k: v for k, v in lengths.items() if k != "images_note"}},
    }


def weights_source(raw: dict[str, Any], run_cfg: DictConfig) -> str:
    state = raw["state_dict"]
    if any(k.startswith("generator_ema.") for k in state):
        return "generator_ema (the exponential moving average of the generator's weights)"
    if any(k.startswith("generator.") for k in state):
        return "generator"
    return "network.decoder (the VAE's decoder)"


def training_length(raw: dict[str, Any], run_cfg: DictConfig) -> dict[str, Any]:
    """Global step (optimizer steps), generator steps, epoch and images shown, from the checkpoint."""
    steps = raw["state_dict"].get("generator_steps")
    generator_steps = int(steps) if isinstance(steps, Tensor) else None
    global_step = int(raw.get("global_step", 0))
    batches = generator_steps if generator_steps is not None else global_step  # an autoencoder: 1 step a batch
    images_seen = next((int(state["images_seen"]) for state in raw.get("callbacks", {}).values()
                        if isinstance(state, dict) and "images_seen" in state), None)
    batch_size = OmegaConf.select(run_cfg, "dataset.batch_size")
    devices = OmegaConf.select(run_cfg, "trainer.devices")
    world = devices if isinstance(devices, int) and devices > 0 else len(devices) if OmegaConf.is_list(devices) else 1
    world *= int(OmegaConf.select(run_cfg, "trainer.num_nodes") or 1)
    if images_seen is not None:
        note = "counted by the progressive-growing schedule"
    elif isinstance(batch_size, int):
        images_seen = batches * batch_size * world
        note = f"training batches x dataset.batch_size ({batch_size})" + (f" x {world} processes" if world > 1 else "")
    else:
        note = "unknown"
    return {"global_step": global_step, "generator_steps": generator_steps, "epoch": raw.get("epoch"),
            "images_shown": images_seen, "images_note": note}


def run_folder(checkpoint: Path) -> Path:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def hydra_record(run_dir: Path) -> tuple[dict[str, Any], list[str] | None]:
    """The config-group choices (model=..., loss=...) and command-line overrides that Hydra recorded
    in ``<run>/.hydra``; empty when the run was started without Hydra's folder."""
    import yaml

    choices: dict[str, Any] = {}
    overrides = None
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
        choices = dict(yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"])
    with contextlib.suppress(OSError, yaml.YAMLError):
        loaded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        overrides = [str(o) for o in loaded] if isinstance(loaded, list) else None
    return choices, overrides


def evaluation_results(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """evaluate.py's JSON results (``json=<run>/evaluation.json``) kept in the run folder."""
    found = []
    for path in sorted(run_dir.glob("*.json")) + sorted((run_dir / "evaluation").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            result = json.loads(path.read_text())
            if isinstance(result, dict) and isinstance(result.get("metrics"), dict) and \
                    isinstance(result.get("protocol"), dict):
                found.append((str(path.relative_to(run_dir)), result))
    return found


def quality_log(run_dir: Path) -> tuple[str, dict[str, str]] | None:
    """The last row of quality/<metric> values the quality callback logged to csv/metrics.csv."""
    path = run_dir / "csv" / "metrics.csv"
    latest: tuple[str, dict[str, str]] | None = None
    with contextlib.suppress(OSError, csv.Error):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                values = {k.split("/", 1)[1]: v for k, v in row.items() if k and k.startswith("quality/") and v}
                if values:
                    latest = (row.get("step", "?"), values)
    return latest


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _dataset_lines(run_cfg: DictConfig, choices: dict[str, Any]) -> list[str]:
    data = run_cfg.get("dataset") or {}
    target = str(data.get("_target_", "unknown"))
    name = choices.get("dataset") or target.rsplit(".", 1)[-1]
    lines = [f"- Dataset: **{name}** (`{target}`), served as {' x '.join(str(s) for s in data.get('shape', []))} "
             f"(C x H x W) in the range {list(data.get('value_range') or [])}."]
    fraction = data.get("test_fraction")
    if fraction is not None:
        lines.append(f"- Split: the training split; a random {float(fraction):.0%} of the data (fixed by "
                     f"dataset.seed={data.get('seed')}) was held out for validation and testing.")
    else:
        lines.append("- Split: the dataset's training split (its test split held out).")
    subset = data.get("subset")
    lines.append(f"- Subset: {subset} training images (dataset.subset, chosen by subset_seed="
                 f"{data.get('subset_seed')})." if subset else "- Subset: none (all training images).")
    if data.get("num_classes"):
        lines.append(f"- Classes: {data.get('num_classes')}.")
    return lines


def _nested_name(value: Any) -> Any:
    return str(value["_target_"]).rsplit(".", 1)[-1] if isinstance(value, dict) else value


def _describe(node: Any) -> str:
    """One line for a config node: its class and its settings."""
    if node is None:
        return "none"
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(container, dict):
        return f"`{container}`"
    target = str(container.get("_target_", "")).rsplit(".", 1)[-1]
    # Nested networks (a conditional wrapper's backbone) by class name; zeros and nulls (terms
    # switched off) left out.
    settings = ", ".join(f"{k}={_nested_name(v)}" for k, v in container.items()
                         if not k.startswith("_") and (not isinstance(v, dict) or "_target_" in v)
                         and v not in (None, [], 0, 0.0, False))
    return f"`{target}`" + (f" ({settings})" if settings else "")


def _recipe_lines(run_cfg: DictConfig, choices: dict[str, Any], overrides: list[str] | None) -> list[str]:
    model = run_cfg.model
    lines = []
    if choices:
        keys = ", ".join(f"{group}={choices.get(group) or 'none'}" for group in ("model", "loss", "optimizer", "augment",
                                                                        "experiment") if group in choices)
        lines.append(f"- Config choices: {keys}.")
    else:
        lines.append("- Config choices: not recorded (the run folder has no .hydra/ record); the settings below "
                     "come from the checkpoint's stored config.")
    if overrides is not None:
        lines.append(f"- Command: `python train.py {' '.join(overrides)}`")
    lines.append(f"- Experiment: {choices.get('experiment') or 'none'}.")
    if "generator" in model:
        loss = OmegaConf.select(model, "loss") or run_cfg.get("loss")
        optimizer = OmegaConf.select(model, "optimizer") or run_cfg.get("optimizer") or {}
        system = run_cfg.get("module") or model
        augment = OmegaConf.select(loss, "augment") if loss is not None else None
        lines += [f"- Generator: {_describe(model.generator)}.",
                  f"- Discriminator: {_describe(model.get('discriminator'))}.",
                  f"- Loss: {_describe(loss)}.",
                  f"- Optimizer: G {_describe(optimizer.get('g'))}; D {_describe(optimizer.get('d'))}.",
                  f"- Augmentation: {_describe(augment)}.",
                  f"- D steps per G step (n_critic): {system.get('n_critic', 1)}; EMA of G: "
                  f"{system.get('ema_decay') or 'off'}."]
    else:
        system = model.get("system") or model
        lines += [f"- Network: {_describe(model.network)}; only its decoder is in this folder.",
                  f"- Training: {_describe(system)}.",
                  f"- Optimizer: {_describe(system.get('optimizer') or OmegaConf.select(run_cfg, 'optimizer'))}."]
    return lines


def _metric_lines(run_dir: Path, checkpoint: Path) -> list[str]:
    results = evaluation_results(run_dir)
    quality = quality_log(run_dir)
    lines = []
    for name, result in results:
        lines.append(f"From evaluate.py, `{name}` in the run folder:\n")
        lines.append("| metric | value |" + (" floor (real vs real) |" if isinstance(result.get("floor"), dict) else ""))
        lines.append("|---|---|" + ("---|" if isinstance(result.get("floor"), dict) else ""))
        for key, value in result["metrics"].items():
            if isinstance(value, (int, float)):
                floor = result.get("floor")
                extra = f" {_value(floor.get(key))} |" if isinstance(floor, dict) else ""
                lines.append(f"| {key} | {_value(value)} |{extra}")
        protocol = "; ".join(f"{k}: {v}" for k, v in result["protocol"].items())
        lines.append(f"\nProtocol: {protocol}.\n")
    if quality is not None:
        step, values = quality
        lines.append(f"Logged during training by the quality callback (callbacks.quality, its fixed-noise samples "
                     f"against held-out images in the project's own feature space) at step {step}: "
                     + ", ".join(f"{k} {v}" for k, v in values.items()) + ".\n")
    if not lines:
        lines.append("Not evaluated: the run folder holds no evaluation results. Score the checkpoint with\n")
        lines.append(f"    python evaluate.py checkpoint={checkpoint} json={run_dir / 'evaluation.json'}\n")
        lines.append("and export again: the card then lists the figures with their protocol.\n")
    lines.append("Unless its protocol names the FID Inception network, a figure here is in the project's own "
                 "feature space (a small network per dataset): it compares with other runs of this project scored "
                 "the same way, not with figures in papers.")
    return lines


def model_card(config: dict[str, Any], run_cfg: DictConfig, raw: dict[str, Any], checkpoint: Path,
               network: nn.Module) -> str:
    """README.md: Hub front matter and the sections a reader needs to judge and use the model."""
    run_dir = run_folder(checkpoint)
    choices, overrides = hydra_record(run_dir)
    lengths = training_length(raw, run_cfg)
    family = config["network"]["_target_"].rsplit(".", 1)[-1]
    if config["num_classes"] is not None:
        family = f"{config['network'].get('backbone', {}).get('_target_', family).rsplit('.', 1)[-1]} (class-conditional)"
    dataset = choices.get("dataset") or str(OmegaConf.select(run_cfg, "dataset._target_") or "data").rsplit(".", 1)[-1]
    conditional = config["num_classes"] is not None
    tags = ["gan-lightning", "image-generation", "pytorch", "safetensors",
            "vae" if config["kind"] == "vae_decoder" else "gan",
            "class-conditional" if conditional else "unconditional-image-generation",
            config["network"]["_target_"].rsplit(".", 1)[-1].lower()]
    front = ModelCardData(library_name=PROJECT, tags=tags,
                          pipeline_tag=None if conditional else "unconditional-image-generation").to_yaml()
    n, nrow, labels = grid_layout(network)
    shape = " x ".join(str(s) for s in config["image_shape"])
    grid_text = (f"{n // nrow} rows x {nrow} columns, one class per column (classes 0 to {nrow - 1}, left to right)"
                 if conditional else f"{n // nrow} x {nrow}")
    grid_call = f"generator.sample({n}, seed={GRID_SEED}" + (
        f", labels=[i % {nrow} for i in range({n})])" if conditional else ")")
    labels_line = "images = generator.sample(10, seed=0, labels=[3] * 10)  # ten images of class 3\n" if conditional else ""
    psi_line = "images = generator.sample(16, seed=0, truncation_psi=0.7)  # the truncation trick\n" \
        if config["style_based"] else ""
    images_shown = lengths["images_shown"]
    generator_steps = lengths["generator_steps"]
    if generator_steps is None:
        generator_steps = "n/a (an autoencoder: one optimizer step per batch)"
    sections = [
        f"---\n{front}\n---\n",
        f"# {family} trained on {dataset}\n",
        f"A {'VAE decoder' if config['kind'] == 'vae_decoder' else 'GAN generator'} exported from a {PROJECT} "
        f"checkpoint: it maps z ~ N(0, I) of {config['z_dim']} dimensions"
        + (f" and a class label (0 to {config['num_classes'] - 1})" if conditional else "")
        + f" to {shape} images (C x H x W) in the range {config['data_range']}. Weights: "
        f"{config['source']['weights']}.\n",
        "## Data\n", *_dataset_lines(run_cfg, choices), "",
        "## Recipe\n", *_recipe_lines(run_cfg, choices, overrides), "",
        "## Training length\n",
        f"- Global step (Lightning's optimizer steps, D steps included): {lengths['global_step']}",
        f"- Generator steps: {generator_steps}",
        f"- Images shown: {images_shown if images_shown is not None else 'unknown'} ({lengths['images_note']})",
        f"- Epoch (Lightning's counter, from 0): {lengths['epoch']}", *growth_note(network), "",
        "## Metrics\n", *_metric_lines(run_dir, checkpoint), "",
        "## Samples\n",
        f"![samples]({SAMPLES_FILE})\n",
        f"`{SAMPLES_FILE}`: {grid_text}, seed {GRID_SEED} (`{grid_call}`).\n",
        "## Use\n",
        f"With {PROJECT} installed (`pip install -e .` in its checkout):\n",
        "```python\nimport torch\nfrom gan_modules.hub import load\n\n"
        'generator = load("path/to/this/folder")        # checks the sha256, builds only allowlisted classes\n'
        f"images = generator.sample(16, seed=0)          # (16, {', '.join(str(s) for s in config['image_shape'])}) "
        f"float32 in {config['data_range']}" + (", classes 0, 1, 2, ... in turn" if conditional else "") + "\n"
        f"{labels_line}{psi_line}"
        "z = torch.randn(4, generator.z_dim)\n"
        f"images = generator(z{', torch.tensor([0, 1, 2, 3])' if conditional else ''})\n```\n",
        "From the Hugging Face Hub once pushed there (`generator.push_to_hub(\"user/name\")`):\n",
        '```python\nfrom gan_modules.hub import HubGenerator\n\ngenerator = HubGenerator.from_pretrained("user/name")\n```\n',
        "## Files\n",
        f"- `{WEIGHTS_FILE}`: the weights (safetensors, no pickle); `{CONFIG_FILE}` records its sha256, checked "
        "before it is read.",
        f"- `{CONFIG_FILE}`: the `_target_` config that rebuilds the network, z_dim, num_classes, data_range, "
        "image_shape, style_based, and where the weights came from.",
        f"- `{SAMPLES_FILE}`: the sample grid above.",
        f"- Exported from `{checkpoint.name}` by {PROJECT} {project_version()} (config format "
        f"{FORMAT} v{FORMAT_VERSION}).",
    ]
    return "\n".join(sections) + "\n"


def growth_note(network: nn.Module) -> list[str]:
    """A line for a progressive generator exported before it was fully grown."""
    from gan_modules.nets.progressive import fully_grown

    if fully_grown(network):
        return []
    return [f"- Not fully grown: exported at stage {int(network.stage)} of {network.num_stages - 1} (fade-in alpha "
            f"{float(network.alpha):.2f}), so it makes smaller images than the data's full size."]


def minimal_card(config: dict[str, Any]) -> str:
    """A card for ``save_pretrained`` of a generator whose folder card is unknown."""
    front = ModelCardData(library_name=PROJECT, tags=["gan-lightning", "image-generation", "safetensors"]).to_yaml()
    return (f"---\n{front}\n---\n\n# {config['network'].get('_target_', 'generator').rsplit('.', 1)[-1]}\n\n"
            f"Load with `gan_modules.hub.load(folder)`; samples in `{SAMPLES_FILE}`.\n")
