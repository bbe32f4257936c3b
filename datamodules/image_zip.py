"""Datamodule for a zip archive of same-size square images, in NVlabs' dataset layout.

The archive is what ``python -m datamodules.prepare SRC DEST.zip --resolution N`` writes, or what
NVlabs' dataset_tool writes: image members (png, jpg, ...; any folder structure) and an optional
``dataset.json`` holding ``{"labels": [[member, class], ...]}`` or ``{"labels": null}``. Only the
central directory and ``dataset.json`` are read at setup (json only: nothing in the archive is
unpickled or evaluated); images are decoded one per item, from a handle that each DataLoader worker
process opens for itself. Member names are only keys: nothing is ever extracted to disk.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import (
    CorruptDatasetError,
    DatasetNotFoundError,
    GANDataModule,
    check_choice,
    check_fraction,
    check_int,
)
from datamodules.image_files import IMAGE_EXTENSIONS

LABEL_MODES = ("auto", "none")
METADATA_NAME = "dataset.json"


@dataclass(frozen=True)
class ZipIndex:
    members: list[str]
    labels: list[int]  # -1 each when unlabelled
    class_names: list[str]
    size: tuple[int, int]  # (width, height) of the first image


def is_image_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    # Skip folders, hidden files and macOS resource forks (__MACOSX/, ._name); "." and ".." are just
    # characters of a name here, never followed as paths.
    hidden = any(p.startswith(".") and p not in (".", "..") for p in parts)
    return (not name.endswith("/") and bool(parts) and not hidden
            and parts[0] != "__MACOSX" and PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS)


def read_labels(archive: zipfile.ZipFile, path: Path, members: list[str]) -> tuple[list[int], list[str]]:
    """Labels per member and class names from ``dataset.json`` (json only); none without the file."""
    if METADATA_NAME not in archive.namelist():
        return [-1] * len(members), []
    where = f"{path}: {METADATA_NAME}"
    try:
        metadata = json.loads(archive.read(METADATA_NAME).decode("utf-8"))
    except Exception as err:
        raise CorruptDatasetError(f"{where} is not valid json ({type(err).__name__}: {err})") from err
    if not isinstance(metadata, dict) or "labels" not in metadata:
        raise CorruptDatasetError(f'{where} must be an object with a "labels" key (a list of [member, class] or null)')
    pairs = metadata["labels"]
    if pairs is None:
        return [-1] * len(members), []
    if not isinstance(pairs, list):
        raise CorruptDatasetError(f'{where}: "labels" must be a list of [member, class] pairs or null')
    by_member: dict[str, int] = {}
    for pair in pairs:
        ok = (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
              and isinstance(pair[1], int) and not isinstance(pair[1], bool) and pair[1] >= 0)
        if not ok:
            raise CorruptDatasetError(f"{where}: the entry {str(pair)[:120]} is not a [member, class] pair with an "
                                      "integer class >= 0 (vector labels are not supported)")
        by_member[pair[0].replace("\\", "/")] = pair[1]
    present = set(members)
    missing = [name for name in by_member if name not in present]
    if missing:
        raise CorruptDatasetError(f"{where} names {len(missing)} member(s) that the archive lacks, e.g. "
                                  f"{missing[0]!r}; prepare the archive again")
    unlabelled = [name for name in members if name not in by_member]
    if unlabelled:
        raise CorruptDatasetError(f"{where} gives no label for {len(unlabelled)} image member(s), e.g. "
                                  f"{unlabelled[0]!r}; prepare the archive again, or set dataset.labels=none")
    labels = [by_member[name] for name in members]
    num_classes = max(labels) + 1
    names = metadata.get("class_names")
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        names = [str(i) for i in range(num_classes)]
    return labels, names


def decode_member(data: bytes, name: str, path: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for broken data
        raise CorruptDatasetError(f"{path}: member {name!r} is not a readable image ({type(err).__name__}: {err}); "
                                  "prepare the archive again") from err
    return img


def read_member(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    try:
        return archive.read(name)
    except Exception as err:  # a CRC mismatch, a truncated archive, an unsupported compression
        raise CorruptDatasetError(f"{path}: member {name!r} cannot be read ({type(err).__name__}: {err}); "
                                  "prepare the archive again") from err


def size_mismatch(path: str, name: str, size: tuple[int, int], expected: tuple[int, int]) -> CorruptDatasetError:
    return CorruptDatasetError(
        f"{path}: member {name!r} is {size[0]}x{size[1]}, but the archive's images are {expected[0]}x{expected[1]}; "
        "every image of a zip dataset has the same size (python -m datamodules.prepare makes them so)")


class ZipImageDataset(Dataset):
    """Images decoded from a zip archive on access, mapped to float32 in ``value_range``.

    The archive handle is opened lazily by whichever process reads (and reopened after a fork), and
    is never pickled: each DataLoader worker has its own.
    """

    def __init__(self, path: str | Path, members: list[str], labels: list[int], image_size: int, channels: int,
                 value_range: tuple[float, float]) -> None:
        self.path = str(path)
        self.members = list(members)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.image_size = image_size
        self.channels = channels
        self.lo, self.hi = value_range
        self._archive: zipfile.ZipFile | None = None
        self._archive_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_archive"], state["_archive_pid"] = None, None
        return state

    def archive(self) -> zipfile.ZipFile:
        if self._archive is None or self._archive_pid != os.getpid():
            self._archive, self._archive_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._archive

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        name = self.members[index]
        img = decode_member(read_member(self.archive(), name, self.path), name, self.path)
        if img.size != (self.image_size, self.image_size):
            raise size_mismatch(self.path, name, img.size, (self.image_size, self.image_size))
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        arr = np.asarray(img.convert("RGB" if self.channels == 3 else "L"), dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        x = torch.from_numpy(arr.transpose(2, 0, 1).copy()).to(torch.float32)
        return x.div_(255.0).mul_(self.hi - self.lo).add_(self.lo), self.labels[index]


class ImageZipDataModule(GANDataModule):
    """Square images of one size from a zip archive (``dataset=image_zip dataset.path=/data/ffhq256.zip``).

    labels: "auto" reads classes from ``dataset.json`` (unlabelled without one, or with
    ``"labels": null``); "none" ignores them. test_fraction: share of images held out (random,
    fixed by ``seed``) for val/test; with 0 the val and test loaders serve the training images.
    check_members: read every member's image header at setup, so that a member of another size or
    an unreadable header stops the run before training (a few seconds per 100k images); with false
    such a member stops the run when it is first read.
    """

    _shape_hint = "dataset.image_size / dataset.channels"

    def __init__(
        self,
        path: str,
        image_size: int = 64,
        channels: int = 3,
        labels: str = "auto",
        test_fraction: float = 0.0,
        check_members: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if path is None or not str(path).strip():
            raise ValueError("dataset.path is not set: give the zip archive of your images, e.g. "
                             "dataset.path=/data/images.zip (make one with python -m datamodules.prepare)")
        self.path = Path(str(path)).expanduser()
        self.image_size = check_int("image_size", image_size, 1)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.channels = channels
        self.labels = check_choice("labels", labels, LABEL_MODES)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self.check_members = bool(check_members)
        self._require_value_range()
        self._check_declared_shape()
        # The archive is opened when its contents are first needed (num_classes, setup): train.py
        # asks for num_classes before it writes anything, so a wrong path still stops before any work.
        self._index: ZipIndex | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        return len(self.index().class_names) or None

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (from dataset.json's "class_names", else "0", "1", ...); empty when unlabelled."""
        return list(self.index().class_names)

    def open_archive(self) -> zipfile.ZipFile:
        if not self.path.is_file():
            raise DatasetNotFoundError(
                f"zip archive {self.path} does not exist; point dataset.path at your archive (make one with "
                "python -m datamodules.prepare SRC DEST.zip --resolution N)")
        try:
            return zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CorruptDatasetError(f"{self.path} is not a readable zip archive ({type(err).__name__}: {err})") from err

    def index(self) -> ZipIndex:
        """The image members (sorted), their labels and the first image's size (cached)."""
        if self._index is not None:
            return self._index
        with self.open_archive() as archive:
            names = archive.namelist()
            members = sorted(name for name in names if is_image_member(name))
            if not members:
                raise DatasetNotFoundError(f"{self.path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            if len(set(members)) != len(members):
                twice = next(m for m in members if members.count(m) > 1)
                raise CorruptDatasetError(f"{self.path}: the member name {twice!r} occurs twice; prepare the archive again")
            labels, class_names = read_labels(archive, self.path, members) if self.labels == "auto" \
                else ([-1] * len(members), [])
            first = decode_header(archive, members[0], str(self.path))
        if first[0] != first[1]:
            raise CorruptDatasetError(f"{self.path}: member {members[0]!r} is {first[0]}x{first[1]}, not square; "
                                      "prepare the archive with python -m datamodules.prepare")
        if first[0] != self.image_size:
            raise ValueError(f"{self.path} holds {first[0]}x{first[1]} images, but dataset.image_size="
                             f"{self.image_size}: set dataset.image_size={first[0]} (or prepare the archive again "
                             f"at --resolution {self.image_size})")
        self._index = ZipIndex(members, labels, class_names, first)
        return self._index

    def _check_every_member(self, members: list[str]) -> None:
        with self.open_archive() as archive:
            for name in members:
                size = decode_header(archive, name, str(self.path))
                if size != self.index().size:
                    raise size_mismatch(str(self.path), name, size, self.index().size)

    def _load(self) -> None:
        index = self.index()
        if self.check_members:
            self._check_every_member(index.members)
        n = len(index.members)
        n_test = 0 if self.test_fraction == 0 else min(n - 1, max(1, round(n * self.test_fraction)))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        test_idx, train_idx = sorted(order[:n_test]), sorted(order[n_test:])
        args = (self.image_size, self.channels, self._require_value_range())

        def part(positions: list[int]) -> ZipImageDataset:
            return ZipImageDataset(self.path, [index.members[i] for i in positions],
                                   [index.labels[i] for i in positions], *args)

        self.train_dataset = part(train_idx)
        self.test_dataset = part(test_idx) if n_test else self.train_dataset
        self.val_dataset = self.test_dataset


def decode_header(archive: zipfile.ZipFile, name: str, path: str) -> tuple[int, int]:
    """(width, height) of a member from its image header, without decoding the pixels."""
    try:
        with archive.open(name) as handle, Image.open(handle) as img:
            return img.size
    except Exception as err:  # BadZipFile (CRC), OSError/SyntaxError from PIL, ...
        raise CorruptDatasetError(f"{path}: member {name!r} is not a readable image ({type(err).__name__}: {err}); "
                                  "prepare the archive again") from err
