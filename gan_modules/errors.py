"""Turning the errors a user can fix into one clear line instead of a traceback.

The project's checks raise ordinary exceptions whose messages name the problem and the fix (a config
value, a file, a full disk). At the top of a command-line tool, :func:`report_user_errors` prints such
a message as ``<tool>: error: <message>`` and exits with status 1. ``HYDRA_FULL_ERROR=1`` re-raises
instead, for the traceback. Anything else (a bug) still raises with its traceback.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from datamodules.base import CorruptDatasetError, DatasetNotFoundError
    from gan_modules.atomic_files import DiskFullError, OutputPathError
    from gan_modules.callbacks.guards import NonFiniteTrainingError
    from gan_modules.resume_settings import ResumeConfigError
    from gan_modules.run_folder import RunFolderError

    # ValueError and FileNotFoundError: the project's own checks (configs, shapes, checkpoints) raise these.
    return (ValueError, FileNotFoundError, DatasetNotFoundError, CorruptDatasetError, DiskFullError,
            OutputPathError, NonFiniteTrainingError, ResumeConfigError, RunFolderError, MisconfigurationException)


def user_error_message(err: BaseException) -> str | None:
    """The message to show for ``err`` when it is a user error (unwrapping Hydra's instantiation
    errors), else None."""
    from hydra.errors import InstantiationException

    where = ""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        key = str(err).rsplit("full_key:", 1)[-1].strip() if "full_key:" in str(err) else ""
        where = where or (f" (while building {key})" if key else "")
        err = err.__cause__
    if not isinstance(err, _user_error_types()):
        return None
    text = str(err.args[-1] if isinstance(err, OSError) and err.args else err).strip()
    if isinstance(err, KeyError) or not text:
        return None
    return text + where


@contextlib.contextmanager
def report_user_errors(tool: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        message = user_error_message(err)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{tool}: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
