"""Writing output files so that a failure never destroys what was there before.

Every file a tool of this project writes (checkpoints, npz samples, PNG grids, GIFs, plots, JSON,
config.yaml) goes to a temporary file in the target's own folder, is flushed to disk, and is then
renamed over the target with ``os.replace``, which is atomic within one filesystem: a reader, or the
user after a crash or a full disk, sees either the old complete file or the new complete file.

Temporary names are ``.<name>.<random>.tmp``; ``remove_stale_temp_files`` deletes the ones a killed
process left behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

TEMP_SUFFIX = ".tmp"


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it and the fix."""


class DiskFullError(OSError):
    """The disk filled up while writing; the message says where and that the old file is intact."""


def _fsync_dir(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = True) -> Iterator[IO]:
    """A handle to a temporary sibling of ``path``, renamed over ``path`` when the block ends cleanly.

    On any error (disk full, an interrupt, an exception while serialising) the temporary file is
    removed and ``path`` keeps its previous content. A full disk raises :class:`DiskFullError`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write opens files for writing ('wb' or 'w'), not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp_name, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "its previous content is intact" if target.exists() else "nothing was written there"
            raise DiskFullError(
                err.errno, f"The disk holding {target.parent} is full: {target.name} was not written ({kept}). "
                "Free some space (or write elsewhere) and run again."
            ) from err
        raise
    if fsync:
        _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def check_parent_folder(target: Path, what: str = "output") -> None:
    """Refuse, before any work, a ``target`` whose folder cannot be written: a parent that is a file,
    a folder that cannot be created, is read-only, or where a probe file cannot be made. Creates
    missing parent folders."""
    for parent in [target.parent, *target.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{what}={target}: {parent} is a file, not a folder.")
            break
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"{what}={target}: cannot create the folder {target.parent} ({err.strerror}).") from err
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what}={target}: the folder {target.parent} is not writable; choose another path.")
    try:  # os.access says yes to root everywhere, and knows nothing of read-only mounts: try it
        handle, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"{what}={target}: nothing can be written in {target.parent} ({err.strerror}); "
                              "choose another path.") from err


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work, a path that cannot be written as a file: a folder, a missing or
    read-only folder, a parent that is a file. Creates missing parent folders."""
    target = Path(path)
    if str(path).endswith(("/", os.sep)) or target.is_dir():
        raise OutputPathError(f"{what}={path} is a folder; give a file name, e.g. {what}={target / 'out'}.")
    if target.name in ("", ".", ".."):
        raise OutputPathError(f"{what}={path!s} is not a file name.")
    check_parent_folder(target, what)
    if target.exists() and not os.access(target, os.W_OK) and not os.access(target.parent, os.W_OK):
        raise OutputPathError(f"{what}={path} exists and cannot be replaced; choose another path.")
    return target


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed save left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def save_figure(figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``figure.savefig`` (matplotlib) through a temporary file; the format follows the suffix."""
    target = Path(path)
    with atomic_write(target, "wb") as handle:
        figure.savefig(handle, format=target.suffix.lstrip(".") or "png", **savefig_kwargs)
    return target
