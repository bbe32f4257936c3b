"""Atomic checkpoint files: a crash or kill during a save never leaves a truncated ``last.ckpt``.

Lightning's own ``TorchCheckpointIO`` serialises the whole checkpoint into memory and writes it through
an fsspec transaction whose temporary file lives in the system temp folder; when that folder is on
another filesystem than the run folder (a tmpfs, a node-local disk under a shared one) the final move
is a copy, and a kill during the copy leaves a half-written file under the real name. Here the file is
streamed into a temporary file *in the checkpoint's own folder*, flushed and fsync'ed, then renamed over
the target with ``os.replace``, which is atomic on POSIX and Windows within one filesystem: readers see
either the old complete file or the new complete file. Remote paths (``s3://``, ...) fall back to
Lightning's implementation.

Used through ``conf/trainer/default.yaml``::

    plugins:
      - _target_: gan_modules.checkpoint_io.AtomicCheckpointIO
"""
from __future__ import annotations

import os
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

from gan_modules.atomic_files import atomic_write


def _is_local(path: str | os.PathLike) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def atomic_torch_save(obj: Any, path: str | os.PathLike, fsync: bool = True) -> None:
    """``torch.save`` to a temporary sibling file, then rename it over ``path``."""
    with atomic_write(str(path).removeprefix("file://"), "wb", fsync=fsync) as handle:
        torch.save(obj, handle)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves go through a temporary file and an atomic rename.

    Args:
        fsync: flush the file (and the folder entry) to disk before/after the rename; set false on
            filesystems where fsync is very slow and a power cut is not a concern.
    """

    def __init__(self, fsync: bool = True) -> None:
        super().__init__()
        self.fsync = fsync

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        get_filesystem(path)  # validates the path the way Lightning does
        atomic_torch_save(checkpoint, path, fsync=self.fsync)
