"""Reading pickled data files without running code from them.

``pickle.load`` calls whatever callable a file names, so a planted file (a CIFAR-10 batch downloaded
from a mirror, or shared by someone) could run any command. :func:`restricted_load` admits only the
handful of globals that pickled numpy arrays of plain dtypes need, plus the built-in containers and
scalars the pickle opcodes make by themselves (dict, list, tuple, bytes, str, int, float). Anything
else stops the load with :class:`UnsafePickleError` before it is called.
"""
from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

# (module, name) pairs a numpy array pickle uses, across numpy 1.x/2.x and pickle protocols 2-5.
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol 2 spells bytes as _codecs.encode(text, "latin1")
})


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allowlist (it would run code, or build other objects)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"it asks to call {module}.{name}, which a data file has no reason to")
        return super().find_class(module, name)


def _plain(value: Any) -> bool:
    """Only containers, strings, numbers and numeric numpy arrays (no object arrays)."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bytes, str, int, float, bool))


def restricted_load(handle: BinaryIO, encoding: str = "bytes") -> Any:
    """``pickle.load`` limited to dicts, lists, tuples, bytes/str, numbers and numeric numpy arrays."""
    value = _RestrictedUnpickler(handle, encoding=encoding).load()
    if not _plain(value):
        raise UnsafePickleError("it holds objects other than dicts, lists, strings, numbers and numeric arrays")
    return value


def restricted_loads(data: bytes, encoding: str = "bytes") -> Any:
    return restricted_load(io.BytesIO(data), encoding=encoding)
