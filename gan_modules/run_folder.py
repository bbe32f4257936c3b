"""Guarding a run folder: one run at a time, no checkpoint replaced by an earlier state, no lost rows.

``train.py`` calls these before any work:

- :func:`acquire_lock` writes ``<run dir>/.run.lock`` (PID, host, start time) and refuses a second run
  while the first is alive; a lock whose process has died on this host is stale and taken over.
- :func:`survey_checkpoints` reads every ``checkpoints/*.ckpt`` (memory-mapped, weights only) for the
  training step it was written at; :func:`choose_resume` turns ``ckpt_path`` (a path, ``auto`` or
  null) into the checkpoint to resume from and refuses to start where checkpoints of a later step
  would be overwritten, unless ``overwrite=true``.
- :func:`set_aside_later_metrics` keeps ``csv/metrics.csv`` up to the resumed step and moves the
  rows logged after it (by the run that is now being continued from an earlier point) to a side file,
  so the resumed run appends to a consistent history and nothing is deleted.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from gan_modules.atomic_files import atomic_write_text, remove_stale_temp_files

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
CHECKPOINT_DIR = "checkpoints"
METRICS_CSV = Path("csv") / "metrics.csv"


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message names the files and the fix."""


# --- one run at a time --------------------------------------------------------------------------
def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def acquire_lock(run_dir: Path) -> Path:
    """Create ``run_dir/.run.lock`` or refuse: another live run holds the folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None or not isinstance(holder.get("pid"), int):
                raise RunFolderError(
                    f"{path} exists but cannot be read, so another run may be using {run_dir}. If none is, "
                    f"delete {path} and start again; or give this run its own folder (hydra.run.dir=...)."
                ) from None
            same_host = holder.get("host") == me["host"]
            if same_host and not _process_alive(holder["pid"]):
                log.warning("Removing the stale lock of process %s (no longer running): %s", holder["pid"], path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            where = "on this machine" if same_host else f"on host {holder.get('host')!r}"
            raise RunFolderError(
                f"Another run (process {holder['pid']} {where}, started {holder.get('started', '?')}) is writing "
                f"into {run_dir}: two runs in one folder would interleave their checkpoints, metrics and samples. "
                "Wait for it to end, or give this run its own folder (hydra.run.dir=...)"
                + ("" if same_host else f"; if that run is gone, delete {path}") + "."
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise RunFolderError(f"Could not take the lock {path}; delete it if no run is using {run_dir}.")


def release_lock(path: Path | None) -> None:
    """Remove our lock (only if it is still ours)."""
    if path is None:
        return
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def locked_run_folder(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the block (``enabled`` False: other DDP ranks, which share it)."""
    lock = acquire_lock(run_dir) if enabled else None
    try:
        yield
    finally:
        release_lock(lock)


def remove_leftover_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files of saves a kill interrupted (``.last.ckpt.*.tmp`` ...), in the run's folders."""
    removed: list[Path] = []
    for folder in (run_dir, run_dir / CHECKPOINT_DIR, run_dir / "samples", run_dir / "plots", run_dir / "csv"):
        removed += remove_stale_temp_files(folder)
    for path in removed:
        log.info("Removed a temporary file left by an interrupted save: %s", path)
    return removed


# --- which checkpoint to resume from ------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointRecord:
    path: Path
    step: int | None          # generator steps (a GAN) or batches (an autoencoder); None: unreadable
    logged_step: int | None   # the step index the loggers used at that point (Lightning's batches)
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


def read_checkpoint_step(path: Path) -> CheckpointRecord:
    """The training step a checkpoint was written at, read without loading its tensors into memory."""
    try:
        if path.stat().st_size == 0:
            return CheckpointRecord(path, None, None, "empty file")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any unreadable file is reported, not raised: the caller lists them
        return CheckpointRecord(path, None, None, f"unreadable ({type(err).__name__})")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return CheckpointRecord(path, None, None, "not a checkpoint of this project")
    steps = checkpoint["state_dict"].get("generator_steps")
    batches = None
    with contextlib.suppress(KeyError, TypeError):
        batches = int(checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    step = int(steps) if isinstance(steps, torch.Tensor) else (batches if batches is not None else
                                                              int(checkpoint.get("global_step", 0)))
    return CheckpointRecord(path, step, batches if batches is not None else step)


def survey_checkpoints(run_dir: Path) -> list[CheckpointRecord]:
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return [read_checkpoint_step(p) for p in sorted(folder.glob("*.ckpt"))]


def _listing(records: list[CheckpointRecord]) -> str:
    return "\n".join(f"  {r.path.name}: " + (f"step {r.step}" if r.valid else r.problem) for r in records)


def choose_resume(ckpt_path: str | None, run_dir: Path, overwrite: bool) -> tuple[str | None, list[Path]]:
    """The checkpoint to resume from (None: a fresh start) and the later checkpoints to delete.

    ``auto`` takes the checkpoint of the latest step in ``run_dir/checkpoints`` (``last.ckpt`` when it
    is among them), skipping unreadable files with a warning; it starts fresh only when the folder has
    no checkpoint at all. A start (fresh, or from a given checkpoint) that would overwrite checkpoints
    of a later step in this run folder is refused unless ``overwrite``; with it, those files are
    returned so the caller deletes them before training (they belong to a history being replaced).
    """
    records = survey_checkpoints(run_dir)
    valid = [r for r in records if r.valid]
    if ckpt_path == "auto":
        broken = [r for r in records if not r.valid]
        if broken:
            log.warning("Skipping unreadable checkpoints in %s:\n%s", run_dir / CHECKPOINT_DIR, _listing(broken))
        if records and not valid:
            raise RunFolderError(
                f"ckpt_path=auto: no checkpoint in {run_dir / CHECKPOINT_DIR} can be read:\n{_listing(records)}\n"
                "Resume from a good copy with ckpt_path=PATH, or start over in a new folder (hydra.run.dir=...)."
            )
        if not valid:
            return None, []
        newest = max(valid, key=lambda r: (r.step, r.path.name == "last.ckpt"))
        log.info("ckpt_path=auto: resuming from %s (step %d)", newest.path, newest.step)
        return str(newest.path), []
    start = 0
    if ckpt_path:
        own = read_checkpoint_step(Path(ckpt_path))
        start = own.step or 0
    inside = Path(ckpt_path).resolve() if ckpt_path else None
    later = [r for r in valid if r.step > start and r.path.resolve() != inside]
    if ckpt_path is None:
        later = valid  # a fresh run replaces every checkpoint of the earlier one
    if later and not overwrite:
        what = "A new run" if ckpt_path is None else f"Resuming from {ckpt_path} (step {start})"
        raise RunFolderError(
            f"{what} would overwrite checkpoints of a later step in {run_dir / CHECKPOINT_DIR}:\n{_listing(later)}\n"
            "Continue the latest one with ckpt_path=auto, give this run its own folder (hydra.run.dir=...), or "
            "pass overwrite=true to delete those checkpoints and train from here."
        )
    return ckpt_path, [r.path for r in later]


# --- metrics.csv --------------------------------------------------------------------------------
def set_aside_later_metrics(run_dir: Path, resume_logged_step: int | None) -> Path | None:
    """Keep the rows of ``csv/metrics.csv`` logged before ``resume_logged_step`` (None: a fresh run,
    keep none); move the others, atomically, to ``csv/metrics.replaced_<time>.csv``. Returns that file."""
    path = run_dir / METRICS_CSV
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)

    def logged_before(row: dict[str, str]) -> bool:
        if resume_logged_step is None:
            return False
        try:
            return int(float(row.get("step") or -1)) < resume_logged_step
        except ValueError:
            return False

    kept = [r for r in rows if logged_before(r)]
    moved = [r for r in rows if not logged_before(r)]
    if not moved:
        return None

    def as_text(part: list[dict[str, str]]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(part)
        return buffer.getvalue()

    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    side = path.with_name(f"metrics.replaced_{stamp}.csv")
    atomic_write_text(side, as_text(moved))  # first the copy, then the shortened original
    atomic_write_text(path, as_text(kept))
    log.warning("%d rows of %s were logged after the step this run starts from; moved them to %s",
                len(moved), path, side)
    return side


def keep_previous_config(run_dir: Path, new_text: str) -> Path | None:
    """A resumed run writes its own config.yaml: keep the previous one beside it when it differs."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    old = path.read_text()
    if old == new_text:
        return None
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    kept = path.with_name(f"config.before_{stamp}.yaml")
    atomic_write_text(kept, old)
    return kept
