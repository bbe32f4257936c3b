"""Score a checkpoint or an npz of samples against a dataset split, offline.

    python evaluate.py checkpoint=logs/train/runs/<time>/checkpoints/last.ckpt
    python evaluate.py samples=samples.npz dataset=fashion_mnist num_real=10000
    python evaluate.py checkpoint=... features=inception protocol=fid50k_full device=cuda
    python evaluate.py checkpoint=... features=inception inception_weights=~/weights-inception-2015-12-05-6726825d.pth

Prints a table and one JSON line (metrics, the real-vs-real floor, and the protocol). Image
metrics use the project's own feature network by default, or the standard FID Inception network
(``features=inception``, weights from a local file; FID, KID, IS); the output says which one. Real
images' features are cached (``stats_cache``), so a second evaluation against the same images
embeds only the samples.
"""
from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_modules.atomic_files import OutputPathError, atomic_write_text, check_output_path

from gan_modules.checkpoints import load_generator
from gan_modules.nets.conditional import cycling_labels, is_conditional
from gan_modules.sampling import chunked_latents, sample_in_batches, whole_number
from gan_modules.images import to_unit_range
from gan_modules.metrics.evaluation import (dataset_config, feature_net_name, score_images, score_points,
                                            unit_range_datamodule)
from gan_modules.metrics.features import load_feature_net
from gan_modules.metrics.inception import InceptionWeightsError, find_weights, load_inception
from gan_modules.metrics.real_stats import default_cache_dir

DEFAULTS = Path(__file__).resolve().parent / "conf" / "evaluate.yaml"


INTEGERS = {"num_samples": 1, "num_real": 1, "seed": None, "crop": 1}  # option: smallest value (None: any)
FEATURES = ("own", "inception")
# Named protocols: the option values they stand for (options given on the command line still win).
PROTOCOLS = {"fid50k_full": {"num_samples": 50000, "split": "train", "num_real": None, "floor": False}}


def parse_args(argv: list[str]) -> DictConfig:
    cfg = OmegaConf.load(DEFAULTS)
    loose = [a for a in argv if "=" not in a]
    if loose:
        raise SystemExit(f"evaluate.py: options are key=value (e.g. samples=samples.npz dataset=digits); got {loose}")
    unknown = sorted({a.split("=", 1)[0] for a in argv} - set(cfg.keys()))
    if unknown:
        raise SystemExit(f"evaluate.py: unknown option(s) {unknown}; options: {', '.join(cfg.keys())}")
    try:
        given = OmegaConf.from_dotlist(argv)
        protocol = given.get("protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            raise SystemExit(f"evaluate.py: protocol must be one of {', '.join(PROTOCOLS)} (or null), got {protocol!r}")
        cfg = OmegaConf.merge(cfg, PROTOCOLS.get(protocol, {}), given)
    except (OmegaConfBaseException, ValueError) as err:
        raise SystemExit(f"evaluate.py: cannot read the options {argv}: {str(err).splitlines()[0]}")
    if cfg.features not in FEATURES:
        raise SystemExit(f"evaluate.py: features must be one of {', '.join(FEATURES)}, got {cfg.features!r}")
    if cfg.features == "inception" and cfg.feature_net is not None:
        raise SystemExit("evaluate.py: feature_net names one of the project's own networks; with features=inception "
                         "give inception_weights=PATH instead")
    if cfg.features != "inception" and cfg.inception_weights is not None:
        raise SystemExit("evaluate.py: inception_weights is read only with features=inception; add it")
    try:
        torch.device(str(cfg.device))
    except RuntimeError as err:
        raise SystemExit(f"evaluate.py: device={cfg.device!r} is not a device (cpu, cuda, cuda:1, ...)") from err
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"evaluate.py: device={cfg.device} but this machine has no CUDA GPU; use device=cpu")
    if (cfg.checkpoint is None) == (cfg.samples is None):
        raise SystemExit("evaluate.py: give exactly one of checkpoint=PATH or samples=FILE.npz")
    if cfg.samples is not None and cfg.dataset is None:
        raise SystemExit("evaluate.py: with samples=FILE.npz also give dataset=NAME (e.g. fashion_mnist)")
    if cfg.split not in ("test", "train"):
        raise SystemExit(f"evaluate.py: split must be test or train, got {cfg.split!r}")
    try:  # num_samples=1.5 must not silently become 1
        for key, minimum in INTEGERS.items():
            if cfg[key] is not None:
                cfg[key] = whole_number(cfg[key], key, minimum)
    except ValueError as err:
        raise SystemExit(f"evaluate.py: {err}") from err
    if cfg.features == "inception":  # before minutes of sampling, not after
        try:
            cfg.inception_weights = str(find_weights(cfg.inception_weights))
        except InceptionWeightsError as err:
            raise SystemExit(f"evaluate.py: {err}") from err
    if cfg.json:  # before minutes of scoring, not after
        try:
            check_output_path(str(cfg.json), "json")
        except OutputPathError as err:
            raise SystemExit(f"evaluate.py: {err}") from err
    return cfg


@torch.no_grad()
def samples_from_checkpoint(path: str, n: int, seed: int, trust: bool = False,
                            device: str = "cpu") -> tuple[torch.Tensor, DictConfig]:
    try:
        generator, run_cfg = load_generator(path, trust=trust)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"evaluate.py: {err}") from err
    z = chunked_latents(n, generator.z_dim, seed)
    # A conditional model is scored on every class equally often, as the test splits are balanced.
    labels = cycling_labels(n, generator.num_classes) if is_conditional(generator) else None
    out = sample_in_batches(generator.to(device), z, labels, device=device)
    if out.dim() == 4:  # the same uint8 quantisation an npz goes through
        out = (to_unit_range(out, generator.output_range) * 255).round() / 255
    return out, run_cfg


def samples_from_npz(path: str, n: int) -> torch.Tensor:
    """``arr_0`` of an npz as float tensors: images N x C x H x W in [0, 1], or points N x D."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"evaluate.py: {path} does not exist" + (" (it is a folder)" if file.is_dir() else ""))
    if file.suffix.lower() == ".npy":
        raise SystemExit(f"evaluate.py: {path} is a .npy file; evaluate.py reads an .npz whose arr_0 holds the "
                         "samples, e.g. np.savez('samples.npz', np.load('samples.npy')).")
    try:  # allow_pickle=False: an object array in a file from elsewhere must never be unpickled
        npz = np.load(file, allow_pickle=False)
    except ValueError as err:  # numpy's own text would suggest allow_pickle=True: never for a foreign file
        raise SystemExit(f"evaluate.py: {path} is not an npz archive (neither a zip nor a .npy file: text, or a "
                         "pickle, which is never loaded); write the samples with np.savez(path, samples) or "
                         "generate.py.") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # truncated or foreign files
        raise SystemExit(f"evaluate.py: {path} is not an npz archive ({type(err).__name__}: {str(err)[:150]}); "
                         "write the samples with np.savez(path, samples) or generate.py.") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):  # a .npy under another name
        raise SystemExit(f"evaluate.py: {path} holds a single array (.npy format), not an npz; evaluate.py reads "
                         "arr_0 of an npz, e.g. np.savez('samples.npz', array).")
    with npz:
        if "arr_0" not in npz.files:
            raise SystemExit(f"evaluate.py: {path} has no arr_0 (its arrays: {npz.files or 'none'}); save the "
                             "samples as the first positional array, np.savez(path, samples).")
        try:
            array = npz["arr_0"][:n]
        except ValueError as err:  # allow_pickle=False refuses object arrays
            raise SystemExit(f"evaluate.py: arr_0 of {path} is an object array, which would have to be unpickled "
                             "(that can run code) and is never read; save plain uint8 or float32 arrays.") from err
        except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise SystemExit(f"evaluate.py: arr_0 of {path} cannot be read ({type(err).__name__}: "
                             f"{str(err)[:150]}); the file may be truncated.") from err
    if len(array) < 2:
        raise SystemExit(f"evaluate.py: {path} holds {len(array)} sample(s); the metrics need at least 2 "
                         "(thousands for stable scores).")
    if array.ndim == 4:
        channels_first = array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3)
        hint = (" It looks like N x C x H x W: use arr.transpose(0, 2, 3, 1)." if channels_first else "")
        if array.dtype != np.uint8:
            raise SystemExit(f"evaluate.py: image samples must be uint8 N x H x W x C, got {array.dtype} "
                             f"{list(array.shape)}.{hint}")
        if channels_first:
            raise SystemExit(f"evaluate.py: image samples must be N x H x W x C, got {list(array.shape)}.{hint}")
        return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise SystemExit(f"evaluate.py: arr_0 of {path} must be uint8 images N x H x W x C or float points N x D, "
                         f"got {array.dtype} of shape {list(array.shape)}.")
    points = array.astype(np.float32)
    if not np.isfinite(points).all():
        raise SystemExit(f"evaluate.py: {path} holds NaN or infinite values; they cannot be scored.")
    return torch.from_numpy(points)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` pixels: undoes the padding of e.g. 28x28 data served at 32x32."""
    height, width = images.shape[-2:]
    if not 0 < size <= min(height, width):
        raise SystemExit(f"evaluate.py: crop={size} does not fit {height}x{width} samples")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.checkpoint is not None:
        fake, run_cfg = samples_from_checkpoint(cfg.checkpoint, cfg.num_samples, cfg.seed, bool(cfg.trust_checkpoint),
                                                str(cfg.device))
        data_cfg = dataset_config(cfg.dataset) if cfg.dataset else run_cfg.dataset
    else:
        fake, data_cfg = samples_from_npz(cfg.samples, cfg.num_samples), dataset_config(cfg.dataset)
    datamodule = unit_range_datamodule(data_cfg)
    if fake.dim() == 2:
        return score_points(fake, datamodule)
    if cfg.crop is not None:
        fake = center_crop(fake, int(cfg.crop))
    if tuple(fake.shape[1:]) != tuple(datamodule.sample_shape):
        raise SystemExit(f"evaluate.py: samples have shape {list(fake.shape[1:])} (C x H x W), the dataset "
                         f"{list(datamodule.sample_shape)}: give the dataset the samples were trained on, or crop=N "
                         "for samples of a padded dataset.")
    if cfg.features == "inception":
        try:
            net, info = load_inception(cfg.inception_weights)
        except InceptionWeightsError as err:
            raise SystemExit(f"evaluate.py: {err}") from err
        net.to(str(cfg.device))
    else:
        name = cfg.feature_net or feature_net_name(data_cfg)
        if name is None:
            raise SystemExit("evaluate.py: no shipped feature network for this dataset; pass feature_net=NAME, or "
                             "features=inception")
        net, info = load_feature_net(name)
    cache = None if cfg.stats_cache in (None, False) else \
        (default_cache_dir() if cfg.stats_cache == "auto" else Path(str(cfg.stats_cache)).expanduser())
    result = score_images(fake, datamodule, net, info, cfg.split, cfg.num_real, cfg.seed, cfg.floor, cache)
    result["protocol"]["crop"] = cfg.crop
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="samples vs real" + (" (floor: real vs real)" if "floor" in result else ""))
    table.add_column("metric")
    table.add_column("samples", justify="right")
    if "floor" in result:
        table.add_column("floor", justify="right")
    for key, value in result["metrics"].items():
        if isinstance(value, (int, float)):
            row = [key, f"{value:.4g}"] + ([f"{result['floor'][key]:.4g}"] if "floor" in result else [])
            table.add_row(*row)
    console = Console(stderr=True)
    console.print(table)
    if "note" in result["protocol"]:
        console.print(result["protocol"]["note"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    result = evaluate(cfg)
    print_table(result)
    line = strict_json(result)
    print(line)
    if cfg.json:
        atomic_write_text(cfg.json, line + "\n")
    return result


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity (Python or numpy) as None: JSON has no such numbers, and
    json.dumps would write Infinity, which strict parsers reject."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strict_json(result: dict[str, Any]) -> str:
    return json.dumps(json_safe(result), allow_nan=False)


if __name__ == "__main__":
    from gan_modules.errors import report_user_errors

    with report_user_errors("evaluate.py"):  # a bad file or value: one line naming it, not a traceback
        main()
