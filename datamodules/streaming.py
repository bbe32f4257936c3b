"""Datamodule that streams WebDataset tar shards: each rank reads only its own shards.

Make the shards with ``python -m datamodules.prepare SRC DEST_FOLDER --format shards --resolution N``:
a folder of ``shard-000000.tar``, ... (each sample ``<key>.png`` and, when labelled, ``<key>.cls``,
the class as decimal text) and ``shards.json`` (written last: counts per shard, size, classes).

Shards are dealt to readers once, round-robin: rank r of W takes shards r, r+W, r+2W, ...; its
DataLoader worker k of K takes every K-th of those. Every reader then yields the same number of
samples per epoch (the smallest reader's count), so that all ranks run the same number of steps
(DDP would wait forever on a rank with an extra batch). A reader streams its shards sequentially,
in an order shuffled per epoch, through a shuffle buffer; nothing is copied or cached. Shards are
read with WebDataset's tar iterator from files this module opens itself (never a URL or a ``pipe:``
command from a config), and samples are decoded here: PNG/JPEG with PIL, the label with int();
WebDataset's own decoders, which would unpickle ``.pyd``/``.pickle`` members, are never used.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.base import CorruptDatasetError, DatasetNotFoundError, GANDataModule, check_int

SHARD_INDEX = "shards.json"
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp")


def shard_plan(counts: list[int], rank: int, world_size: int, num_workers: int) -> tuple[list[int], int]:
    """The shard positions this rank's workers read (all workers' together, worker k taking every
    K-th) and the samples each worker yields per epoch: the smallest reader's total, so every rank
    has the same length. Raises when there are fewer shards than readers."""
    readers = world_size * max(1, num_workers)
    if len(counts) < readers:
        raise ValueError(
            f"{len(counts)} shard(s) cannot feed {world_size} rank(s) x {max(1, num_workers)} loader worker(s) = "
            f"{readers} readers: each reader needs at least one shard. Prepare the shards again with a smaller "
            "--shard-size, or lower dataset.num_workers")
    totals = []
    for r in range(world_size):
        own = list(range(r, len(counts), world_size))
        for k in range(max(1, num_workers)):
            totals.append(sum(counts[i] for i in own[k::max(1, num_workers)]))
    return list(range(rank, len(counts), world_size)), min(totals)


class ShardStream(IterableDataset):
    """Samples ``(x, y)`` of one rank's shards, shuffled per epoch; ``len`` is the rank's samples per epoch."""

    def __init__(self, folder: str | Path, shards: list[str], counts: list[int], image_size: int, channels: int,
                 value_range: tuple[float, float], shuffle: bool = True, shuffle_buffer: int = 1000, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0) -> None:
        self.folder = str(folder)
        self.shards, self.counts = list(shards), list(counts)
        self.image_size, self.channels = image_size, channels
        self.lo, self.hi = value_range
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.own, self.per_reader = shard_plan(self.counts, rank, world_size, num_workers)
        self.epoch = 0  # counts this copy's passes: persistent workers keep their copy between epochs

    def __len__(self) -> int:
        return self.per_reader * max(1, self.num_workers)

    def __getitem__(self, index: int) -> Any:
        raise ValueError("dataset=image_stream serves a stream, not indexed images, so evaluate.py and "
                         "callbacks.quality cannot draw real images from it; prepare the same images as a zip "
                         "(python -m datamodules.prepare SRC DEST.zip) and score against dataset=image_zip")

    def decode(self, sample: dict[str, Any]) -> tuple[Tensor, Tensor]:
        where = f"{sample.get('__url__')}: sample {sample.get('__key__')!r}"
        data = next((sample[s] for s in IMAGE_SUFFIXES if s in sample), None)
        if data is None:
            raise CorruptDatasetError(f"{where} has no image ({', '.join(IMAGE_SUFFIXES)}); prepare the shards again")
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as err:
            raise CorruptDatasetError(f"{where} is not a readable image ({type(err).__name__}: {err}); prepare the "
                                      "shards again") from err
        if img.size != (self.image_size, self.image_size):
            raise CorruptDatasetError(f"{where} is {img.size[0]}x{img.size[1]}, not {self.image_size}x"
                                      f"{self.image_size} like the rest; prepare the shards again")
        label = -1
        if "cls" in sample:
            try:
                label = int(sample["cls"].decode("ascii").strip())
            except (UnicodeDecodeError, ValueError) as err:
                raise CorruptDatasetError(f"{where} has a label that is not an integer") from err
        arr = np.asarray(img.convert("RGB" if self.channels == 3 else "L"), dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        x = torch.from_numpy(arr.transpose(2, 0, 1).copy()).to(torch.float32)
        return x.div_(255.0).mul_(self.hi - self.lo).add_(self.lo), torch.tensor(label, dtype=torch.int64)

    def raw_samples(self, positions: list[int]) -> Iterator[dict[str, Any]]:
        from webdataset.tariterators import group_by_keys, tar_file_expander

        for i in positions:
            path = Path(self.folder) / self.shards[i]
            with open(path, "rb") as stream:
                try:
                    yield from group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}]))
                except Exception as err:  # a truncated or damaged tar
                    if isinstance(err, CorruptDatasetError):
                        raise
                    raise CorruptDatasetError(f"{path}: cannot read the shard ({type(err).__name__}: {err}); "
                                              "prepare the shards again") from err

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        mine = self.own[worker::max(1, self.num_workers)]
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
        self.epoch += 1
        if self.shuffle:
            rng.shuffle(mine)
        buffer: list[dict[str, Any]] = []
        served = 0
        for sample in self.raw_samples(mine):
            if served == self.per_reader:
                break
            if not self.shuffle:
                served += 1
                yield self.decode(sample)
                continue
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                served += 1
                yield self.decode(buffer.pop(rng.randrange(len(buffer))))
        while buffer and served < self.per_reader:
            served += 1
            yield self.decode(buffer.pop(rng.randrange(len(buffer))))


class ImageStreamDataModule(GANDataModule):
    """Images streamed from WebDataset shards (``dataset=image_stream dataset.path=/data/shards``).

    Every rank reads only its own shards (see the module's docstring); val and test serve the same
    stream unshuffled. shuffle_buffer: samples held to shuffle within a reader (memory: that many
    encoded images per worker).
    """

    _shape_hint = "dataset.image_size / dataset.channels"

    def __init__(self, path: str, image_size: int = 64, channels: int = 3, shuffle_buffer: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if path is None or not str(path).strip():
            raise ValueError("dataset.path is not set: give the folder of shards, e.g. dataset.path=/data/shards "
                             "(make one with python -m datamodules.prepare SRC DEST --format shards)")
        self.path = Path(str(path)).expanduser()
        self.image_size = check_int("image_size", image_size, 1)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        self.channels = channels
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 1)
        self._require_value_range()
        self._check_declared_shape()
        self._index: dict[str, Any] | None = None  # read when first needed (num_classes, setup)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        index = self.index()
        return len(index["class_names"]) if index["labelled"] else None

    def index(self) -> dict[str, Any]:
        """``shards.json``, checked (json only), with every listed shard present."""
        if self._index is not None:
            return self._index
        index_path = self.path / SHARD_INDEX
        if not self.path.is_dir():
            raise DatasetNotFoundError(f"shard folder {self.path} does not exist; point dataset.path at the folder "
                                       "python -m datamodules.prepare SRC DEST --format shards wrote")
        if not index_path.is_file():
            raise DatasetNotFoundError(f"{index_path} is missing: the folder holds no finished shard set (prepare "
                                       "writes it last); run python -m datamodules.prepare ... --format shards")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            shards = [(str(s["name"]), int(s["samples"])) for s in index["shards"]]
            labelled, class_names = bool(index["labelled"]), [str(n) for n in index["class_names"]]
            resolution, channels = int(index["resolution"]), int(index["channels"])
        except Exception as err:
            raise CorruptDatasetError(f"{index_path} cannot be read ({type(err).__name__}: {err}); prepare the "
                                      "shards again") from err
        for name, _ in shards:
            # Names are plain file names in this folder: "../x" or "pipe:..." is refused, never opened or run.
            if Path(name).name != name or not name.startswith("shard-") or not name.endswith(".tar"):
                raise CorruptDatasetError(f"{index_path} lists {name!r}, which is not a shard file name of this folder")
            if not (self.path / name).is_file():
                raise CorruptDatasetError(f"{index_path} lists {name}, which is missing; prepare the shards again")
        if resolution != self.image_size:
            raise ValueError(f"{self.path} holds {resolution}x{resolution} images, but dataset.image_size="
                             f"{self.image_size}: set dataset.image_size={resolution}")
        self._index = {"shards": shards, "labelled": labelled, "class_names": class_names, "channels": channels}
        return self._index

    def distributed_position(self) -> tuple[int, int]:
        """(rank, world size) of this process: from the trainer when attached, else torch.distributed."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def stream(self, shuffle: bool, rank: int | None = None, world_size: int | None = None) -> ShardStream:
        index = self.index()
        if rank is None or world_size is None:
            rank, world_size = self.distributed_position()
        names, counts = [n for n, _ in index["shards"]], [c for _, c in index["shards"]]
        return ShardStream(self.path, names, counts, self.image_size, self.channels, self._require_value_range(),
                           shuffle, self.shuffle_buffer, self.seed, rank, world_size, self.num_workers)

    def _load(self) -> None:
        if self.subset is not None:
            raise ValueError("dataset.subset picks samples by index, which a stream does not have; use "
                             "dataset=image_zip for subsets, or prepare the shards with --max-images N")
        self.train_dataset = self.stream(shuffle=True)
        self.val_dataset = self.test_dataset = self.stream(shuffle=False)

    def _ensure_setup(self) -> None:
        super()._ensure_setup()
        # setup() may have run before the trainer was attached (or before DDP started): the streams
        # are then rebuilt for this process's rank, which is only certain when a loader is asked for.
        rank, world_size = self.distributed_position()
        assert isinstance(self.train_dataset, ShardStream)
        if (self.train_dataset.rank, self.train_dataset.world_size) != (rank, world_size):
            self.train_dataset = self.stream(shuffle=True, rank=rank, world_size=world_size)
            self.val_dataset = self.test_dataset = self.stream(shuffle=False, rank=rank, world_size=world_size)

    def _loader(self, dataset: Any, shuffle: bool, drop_last: bool) -> DataLoader:
        # The stream shuffles itself; DataLoader refuses shuffle=True for an IterableDataset.
        return DataLoader(dataset, batch_size=self.batch_size, drop_last=drop_last, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
