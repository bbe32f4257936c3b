"""Cached features of real images, so an evaluation or a quality check embeds the data only once.

Scoring compares generated samples with real ones in a feature space; the real side is the same
every time for the same images and the same network, and with Inception it costs as much as the
whole evaluation. ``real_features`` embeds a set of real images once and keeps the result in
``<cache dir>/<dataset>-<split>-<count>-<network>-<hashes>.npz``.

The key is exact, not a guess from names: the sha256 of the images themselves (in the order they
are scored) and the sha256 of the network's weights, plus the dataset, split and count for the file
name. Changed data, another network or other images give another file. The file is written to a
temporary name and renamed into place; it is read with ``allow_pickle=False`` and its stored key is
compared with the expected one, so a corrupt, foreign or colliding file is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

CACHE_ENV = "GAN_LIGHTNING_CACHE_DIR"
FORMAT_VERSION = 1
# Features kept per set, as float32 values: Inception's 2048 per image over a whole training set would
# take gigabytes, so larger sets keep a seeded random subset of rows for KID and precision/recall,
# while the FID statistics always come from every image.
MAX_KEPT_VALUES = 2**25


def default_cache_dir() -> Path:
    """``$GAN_LIGHTNING_CACHE_DIR``, else ``$XDG_CACHE_HOME/gan_lightning``, else ``~/.cache/gan_lightning``;
    the statistics go in its ``real_stats/`` folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "real_stats"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gan_lightning" / "real_stats"


@dataclass
class RealFeatures:
    """Features ``(n, D)`` (float32) and class probabilities ``(n, K)`` of n of the N real images, their
    labels ``(n,)``, and the Gaussian statistics FID uses over all N (mean ``(D,)``, covariance
    ``(D, D)``, float64). n = N unless N x D exceeds ``MAX_KEPT_VALUES``."""

    features: Tensor
    probs: Tensor
    labels: Tensor
    mean: Tensor
    covariance: Tensor
    from_cache: bool = False


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (1/(n-1) estimator, as torchmetrics and pytorch-fid use) in float64."""
    x = features.detach().to("cpu", torch.float64)
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def images_digest(images: Tensor) -> str:
    """sha256 of the images' exact float32 values and shape: the same images in the same order give
    the same digest; any changed pixel gives another."""
    array = images.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(json.dumps(list(array.shape)).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)[:60] or "data"


def cache_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    name = (f"{_slug(key['dataset'])}-{key['split']}-{key['count']}-{_slug(key['network'])}-"
            f"{key['network_sha256'][:8]}-{key['images_sha256'][:12]}.npz")
    return Path(cache_dir) / name


def _read(path: Path, key: dict[str, Any]) -> RealFeatures | None:
    """The cached entry at ``path`` if it is readable and holds exactly ``key``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if json.loads(str(npz["key"])) != key:
                return None
            arrays = {name: torch.from_numpy(npz[name].copy()) for name in
                      ("features", "probs", "labels", "mean", "covariance")}
    except Exception as err:  # truncated, corrupt, an object array, a missing member: recompute it
        warnings.warn(f"Ignoring the cached real-image statistics {path} ({type(err).__name__}: "
                      f"{str(err)[:120]}); they are computed again and the file replaced.", stacklevel=3)
        return None
    return RealFeatures(**arrays, from_cache=True)


def _write(path: Path, key: dict[str, Any], entry: RealFeatures) -> None:
    """Write the entry beside ``path`` under a temporary name and rename it into place; a cache that
    cannot be written (read-only, full disk) only costs the next run the same computation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"Real-image statistics are not cached ({path.parent}: {err.strerror}).", stacklevel=3)
        return
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, key=np.array(json.dumps(key, sort_keys=True)),
                     features=entry.features.numpy(), probs=entry.probs.numpy(), labels=entry.labels.numpy(),
                     mean=entry.mean.numpy(), covariance=entry.covariance.numpy())
        os.replace(temporary, path)
    except OSError as err:
        warnings.warn(f"Real-image statistics are not cached ({path}: {err.strerror}).", stacklevel=3)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def statistics_key(images: Tensor, describe: dict[str, Any]) -> dict[str, Any]:
    """What a cache entry must match: the images' digest and count, the network's name and hash, the
    dataset and split (see ``real_features``)."""
    key = {**{k: str(describe[k]) for k in ("dataset", "split", "network", "network_sha256")},
           "count": int(len(images)), "images_sha256": images_digest(images), "version": FORMAT_VERSION}
    return json.loads(json.dumps(key, sort_keys=True))


def real_features(images: Tensor, labels: Tensor, embed_fn, describe: dict[str, Any],
                  cache_dir: str | Path | None) -> RealFeatures:
    """Features of ``images`` from ``embed_fn(images) -> (features, probs)``, read from the cache when
    this exact set was embedded by the same network before.

    ``describe`` names the set and the network: ``dataset``, ``split``, ``network`` and
    ``network_sha256``. ``cache_dir`` None switches caching off.
    """
    key = statistics_key(images, describe)
    path = cache_path(Path(cache_dir), key) if cache_dir is not None else None
    if path is not None:
        cached = _read(path, key)
        if cached is not None:
            return cached
    features, probs = embed_fn(images)
    mean, covariance = gaussian_statistics(features)
    labels = torch.as_tensor(labels).cpu()
    keep = MAX_KEPT_VALUES // features.shape[1]
    if len(features) > keep:
        rows = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:keep].sort().values
        features, probs, labels = features[rows], probs[rows], labels[rows]
    entry = RealFeatures(features.detach().cpu().float(), probs.detach().cpu().float(), labels, mean, covariance)
    if path is not None:
        _write(path, key, entry)
    return entry
