"""Reading IDX files (the MNIST file format) and finding the four MNIST-style files.

An IDX file is: two zero bytes, a type byte (0x08 = uint8), a byte giving the
number of dimensions, each dimension as a big-endian uint32, then the data.
Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from datamodules.base import CorruptDatasetError

#: Keys used in this package -> standard IDX file names (without ".gz").
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"
_UINT8_TYPE = 0x08


def _read_bytes(path: Path) -> bytearray:
    """Read a file, decompressing it when it starts with the gzip magic."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != _GZIP_MAGIC:
        return bytearray(path.read_bytes())
    try:
        with gzip.open(path, "rb") as f:
            return bytearray(f.read())
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CorruptDatasetError(f"{path}: corrupt or truncated gzip file ({e}); delete it and get it again") from e


def read_idx(path: str | Path, ndim: int | None = None) -> Tensor:
    """Read an IDX file of unsigned bytes into a uint8 tensor of its stored shape.

    ``ndim``, if given, is the number of dimensions the caller expects.
    Raises CorruptDatasetError naming the file on any format problem.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UINT8_TYPE:
        raise CorruptDatasetError(
            f"{path}: not an IDX file of uint8 data (magic bytes {bytes(raw[:4]).hex() or 'missing'}, "
            "expected 000008xx)"
        )
    dims_count = raw[3]
    if ndim is not None and dims_count != ndim:
        raise CorruptDatasetError(f"{path}: IDX file has {dims_count} dimensions, expected {ndim}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise CorruptDatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{dims_count}I", bytes(raw[4:header]))
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise CorruptDatasetError(
            f"{path}: IDX header promises shape {list(dims)} ({expected} bytes) but the file holds "
            f"{len(raw) - header} data bytes; the file is truncated or corrupt"
        )
    if expected == 0:
        return torch.empty(dims, dtype=torch.uint8)
    # frombuffer shares the bytearray's memory: no second copy of the data.
    data = torch.frombuffer(raw, dtype=torch.uint8, offset=header, count=expected)
    return data.reshape(dims)


def find_idx_files(dirs: Sequence[Path]) -> tuple[dict[str, Path] | None, list[str]]:
    """Return the four IDX files from the first dir holding all of them.

    Each file may be plain or ``.gz`` (plain preferred). Also returns notes on
    dirs holding only some of the files, for the error message.
    """
    notes: list[str] = []
    for d in dirs:
        found: dict[str, Path] = {}
        for key, stem in IDX_FILES.items():
            for name in (stem, stem + ".gz"):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(IDX_FILES):
            return found, notes
        if found:
            missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
            notes.append(f"{d} lacks {', '.join(missing)}")
    return None, notes
