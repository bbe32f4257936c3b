"""Common base class and errors for every GAN datamodule.

A datamodule here serves batches ``(x, y)``: ``x`` is float32 of shape
``(B, *sample_shape)``, ``y`` is int64 of shape ``(B,)`` (``-1`` when the data
has no labels). Shape, class count and value range are known right after
construction so that models can be built before any data is loaded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset's files cannot be found (or downloaded)."""


class CorruptDatasetError(ValueError):
    """Raised when a dataset file exists but cannot be parsed."""


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch as ``(x, y)``: this package serves ``(x, y)`` pairs; a user's loader of bare tensors
    (or 1-tuples) gives ``y = None``."""
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` as float if it lies in [0, 1), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The int64 labels ``(N,)`` of a dataset of ``(x, y)`` items: read from ``labels`` (this package's
    image datasets) or a TensorDataset's second tensor without loading images, else item by item."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels.to(torch.int64)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) > 1:
        return dataset.tensors[1].to(torch.int64)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)  # type: ignore[arg-type]


def subset_indices(num_samples: int, size: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The first ``size`` positions of a fixed permutation (``seed``) of ``num_samples`` samples, sorted.

    With labels (all >= 0), class-balanced: the permutation is dealt round-robin over the classes in
    ascending order (each round takes every class's next sample in permutation order), so each class
    gets ``size // K`` samples and the remainder goes one each to the lowest class ids; a class that runs
    out leaves its share to the others. Either way a smaller subset is part of every larger one.
    ``labels`` None (or any -1): the first ``size`` of the permutation.
    """
    n = num_samples
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if labels is None or bool((labels < 0).any()):
        return order[:size].sort().values
    permuted = labels[order]
    # Each sample's rank within its class in permutation order: round r deals every class's r-th sample.
    rank = torch.empty(n, dtype=torch.int64)
    for cls in permuted.unique():
        members = (permuted == cls).nonzero().flatten()
        rank[members] = torch.arange(members.numel())
    dealing_order = torch.argsort(rank * (int(permuted.max()) + 1) + permuted)  # by (round, class id)
    return order[dealing_order[:size]].sort().values


def _parse_value_range(value_range: Any) -> tuple[float, float] | None:
    if value_range is None:
        return None
    # Hydra hands over ListConfig, so accept any non-string sequence.
    if isinstance(value_range, (str, bytes)) or not isinstance(value_range, Sequence):
        raise ValueError(f"value_range must be two increasing numbers [lo, hi], got {value_range!r}")
    items = list(value_range)
    ok = len(items) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items
    )
    if not ok or not items[0] < items[1]:
        raise ValueError(f"value_range must be two increasing numbers [lo, hi], got {items!r}")
    return float(items[0]), float(items[1])


def _parse_shape(shape: Any) -> tuple[int, ...] | None:
    if shape is None:
        return None
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise ValueError(f"shape must be a list of positive integers, got {shape!r}")
    dims = list(shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"shape must be a list of positive integers, got {dims!r}")
    return tuple(dims)


class GANDataModule(pl.LightningDataModule):
    """Base LightningDataModule for GAN training data.

    Subclasses implement ``sample_shape``, ``num_classes``, ``_load()`` (which
    fills ``train_dataset``, ``val_dataset`` and ``test_dataset``) and
    ``_shape_hint`` (which config keys change the sample shape). They must call
    ``self._check_declared_shape()`` at the end of their constructor.

    ``subset=N`` (limited-data experiments) trains on N samples of the training split only: the
    first N of a permutation fixed by ``subset_seed`` (not the run's seed, so runs with different
    seeds and the same N see the same samples), class-balanced for labelled data (``subset_indices``).

    ``on_device`` (true | false | auto) holds the training split as one tensor on the training device
    inside ``trainer.fit`` (``datamodules/device_loader.py``, docs/on_device.md): same batches in the
    same order as the DataLoader, no workers, no copy per step. ``auto`` does so for data already in
    memory that fits the budget; ``true`` also decodes file-backed images once, and stops with the
    size and the budget when they do not fit.
    """

    #: Text telling the user which config keys set the sample shape.
    _shape_hint: str = "dataset.image_size"

    def __init__(
        self,
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        value_range: Sequence[float] | None = (-1.0, 1.0),
        shape: Sequence[int] | None = None,
        drop_last: bool = True,
        seed: int = 0,
        num_classes: int | None = None,
        feature_net: str | None = None,
        subset: int | None = None,
        subset_seed: int = 0,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__()
        from datamodules.device_loader import parse_on_device

        self.on_device = parse_on_device(on_device)
        # (device, x, y) of the materialised training split, made once and reused by every loader.
        self._device_data: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None
        self._on_device_logged = False
        # The shipped feature network (gan_modules/metrics/weights/<name>.pt) that scores samples of
        # this data (callbacks.quality, evaluate.py, generate.py arithmetic); None: none fits.
        if feature_net is not None and not isinstance(feature_net, str):
            raise ValueError(f"feature_net must be a feature network name (e.g. digits) or null, got {feature_net!r}")
        self.feature_net = feature_net
        # What the config declares (dataset.num_classes), read by conditional models before any data
        # is loaded; build.validate_setup checks it against the data's own ``num_classes``.
        self.declared_num_classes = num_classes
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self._value_range = _parse_value_range(value_range)
        self.declared_shape = _parse_shape(shape)
        self.drop_last = bool(drop_last)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
            raise ValueError(f"dataset.subset must be an integer >= 1 (training samples to use) or null for all of "
                             f"them, got {subset!r}")
        self.subset = subset
        self.subset_seed = check_int("subset_seed", subset_seed, 0)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        # Progressive growing (callbacks/progressive.py): serve images at this resolution, the
        # newest resolution faded in by this alpha. None: the full size.
        self.resolution: int | None = None
        self.fade_alpha = 1.0

    # --- metadata, available before setup -------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) for images, (D,) for vectors."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for unlabelled data."""
        raise NotImplementedError

    @property
    def value_range(self) -> tuple[float, float] | None:
        """Interval [lo, hi] that pixel values are mapped to (None for vector data)."""
        return self._value_range

    @property
    def is_image(self) -> bool:
        """True when samples are (C, H, W) images."""
        return len(self.sample_shape) == 3

    def _require_value_range(self) -> tuple[float, float]:
        """Image datamodules need a range to map pixels into; fail early without one."""
        if self._value_range is None:
            raise ValueError(
                f"{type(self).__name__} serves images and needs value_range=[lo, hi]; got None "
                "(set dataset.value_range or model.data_range, e.g. [-1.0, 1.0])"
            )
        return self._value_range

    def _check_declared_shape(self, actual: Sequence[int] | None = None) -> None:
        """Raise if the config's ``shape`` differs from the data's sample shape."""
        real = tuple(actual) if actual is not None else self.sample_shape
        if self.declared_shape is not None and self.declared_shape != real:
            raise ValueError(
                f"dataset.shape={list(self.declared_shape)} (what the models were built for) "
                f"differs from the real sample shape {list(real)} of {type(self).__name__}; "
                f"change {self._shape_hint} or dataset.shape so that they agree"
            )

    # --- progressive growing ------------------------------------------------
    def set_progress(self, resolution: int, alpha: float = 1.0, batch_size: int | None = None) -> None:
        """Serve ``resolution`` x ``resolution`` images from now on (the data's size must be that
        times a power of two), blended as ProGAN does while a stage fades in: ``lerp(upsample(
        downsample(x)), x, alpha)``, so the reals D sees change as smoothly as the fakes. A new
        ``batch_size`` takes effect when the training loader is next built."""
        if not self.is_image:
            raise ValueError(f"Progressive growing needs image data; {type(self).__name__} serves vectors.")
        full = self.sample_shape[-1]
        if resolution > full or full % resolution or (full // resolution) & (full // resolution - 1):
            raise ValueError(f"Cannot serve {resolution}x{resolution} images from {full}x{full} data: the data's "
                             "size must be the resolution times a power of two (e.g. dataset.image_size=32).")
        self.resolution, self.fade_alpha = int(resolution), float(alpha)
        if batch_size is not None:
            self.batch_size = check_int("batch_size", batch_size, 1)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Downsample image batches to the progressive-growing resolution, on the device."""
        full = self.sample_shape[-1]
        if self.resolution is None or (self.resolution == full and self.fade_alpha == 1.0):
            return batch
        x, *rest = batch
        if self.resolution < full:
            x = F.avg_pool2d(x, full // self.resolution)
        if self.fade_alpha < 1.0:
            coarse = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
            x = torch.lerp(coarse, x, self.fade_alpha)
        return (x, *rest)

    # --- loading --------------------------------------------------------
    def _load(self) -> None:
        """Fill train/val/test datasets; called once by ``setup``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the data once; later calls do nothing."""
        if self.train_dataset is not None:
            return
        self._load()
        self._apply_subset()

    def _apply_subset(self) -> None:
        """Keep ``subset`` samples of the training split. The subset is taken after ``_load`` has held
        out the validation/test samples (``val_size``, ``test_fraction``): the held-out set then stays
        the same for every N, so validation numbers compare across subset sizes, and the N training
        samples are never validation samples. Val/test datasets that are the training set itself (no
        held-out share) keep all of it, so scores are still measured against the whole data."""
        if self.subset is None:
            return
        assert self.train_dataset is not None
        n = len(self.train_dataset)  # type: ignore[arg-type]
        if self.subset > n:
            raise ValueError(
                f"dataset.subset={self.subset} is larger than the training set of {type(self).__name__}, which has "
                f"{n} samples (after any validation/test hold-out); use dataset.subset <= {n}, or null for all"
            )
        labels = dataset_labels(self.train_dataset) if self.num_classes is not None else None
        self.train_dataset = Subset(self.train_dataset, subset_indices(n, self.subset, self.subset_seed, labels).tolist())

    def _ensure_setup(self) -> None:
        if self.train_dataset is None:
            self.setup()

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled loader over the training split."""
        self._ensure_setup()
        assert self.train_dataset is not None
        n = len(self.train_dataset)  # type: ignore[arg-type]
        # With drop_last a too-small set would silently yield zero batches.
        if self.drop_last and n < self.batch_size:
            raise ValueError(
                f"training set has {n} samples, fewer than batch_size={self.batch_size}, so "
                "drop_last would leave no batch; lower dataset.batch_size or set dataset.drop_last=false"
            )
        device_batches = self._device_batches()
        if device_batches is not None:
            return device_batches  # type: ignore[return-value]
        return self._loader(self.train_dataset, shuffle=True, drop_last=self.drop_last)

    # --- dataset.on_device ----------------------------------------------
    def _fit_trainer(self) -> Any:
        """The Trainer fitting with this datamodule, or None (the loader is then an ordinary DataLoader:
        outside ``fit`` there is no training device)."""
        trainer = getattr(self, "trainer", None)
        return trainer if trainer is not None and getattr(trainer, "strategy", None) is not None else None

    def on_device_plan(self, device: torch.device) -> tuple[bool, str]:
        """Whether the training split goes on ``device`` as one tensor, and why (raises for
        ``on_device=true`` on data that cannot or does not fit)."""
        from datamodules.device_loader import BUDGET_FRACTION, device_memory_budget, source_kind

        if self.on_device is False:
            return False, "dataset.on_device=false"
        assert self.train_dataset is not None
        kind, why = source_kind(self.train_dataset)
        if kind is None or (kind == "files" and self.on_device == "auto"):
            if self.on_device is True:
                raise ValueError(f"dataset.on_device=true cannot hold the training set of {type(self).__name__} on the "
                                 f"device: {why}. Set dataset.on_device=false (or auto).")
            return False, f"dataset.on_device=auto: off, {why}"
        n = len(self.train_dataset)  # type: ignore[arg-type]
        size = n * math.prod(self.sample_shape) * 4 + n * 8  # float32 samples + int64 labels
        budget = device_memory_budget(device)
        if budget is None:
            if self.on_device == "auto":
                return False, f"dataset.on_device=auto: off, the free memory of {device} is unknown"
            return True, f"{size} bytes on {device} (its free memory is unknown: not checked)"
        limit, how = budget
        if size > limit:
            if self.on_device is True:
                raise ValueError(
                    f"dataset.on_device=true: the training set of {type(self).__name__} ({n} samples) takes {size} "
                    f"bytes as float32, more than the budget of {limit} bytes ({how}; on_device may use "
                    f"{BUDGET_FRACTION:.0%}). Set dataset.on_device=false (or auto), or train on fewer samples "
                    "(dataset.subset=N)."
                )
            return False, f"dataset.on_device=auto: off, {size} bytes exceed the budget of {limit} bytes ({how})"
        return True, f"{size} bytes on {device} (budget {limit} bytes: {how})"

    def _device_batches(self) -> Any:
        """The on-device loader for the running fit, or None to use the DataLoader."""
        trainer = self._fit_trainer()
        if trainer is None or self.on_device is False:
            return None
        if getattr(trainer, "overfit_batches", 0):
            # Lightning makes an overfitting DataLoader sequential; keep that behaviour.
            self._log_on_device_once(trainer, "dataset.on_device: off, trainer.overfit_batches serves fixed batches")
            return None
        device = trainer.strategy.root_device
        if self._device_data is None or self._device_data[0] != device:
            on, why = self.on_device_plan(device)
            self._log_on_device_once(trainer, f"dataset.on_device: training set held as one tensor, {why}; batches "
                                              "are sliced there, no DataLoader" if on else why)
            if not on:
                return None
        sampler_kwargs = getattr(trainer, "distributed_sampler_kwargs", None) or {}
        replicas = int(sampler_kwargs.get("num_replicas", 1))
        # As Lightning decides whether to give a DataLoader a DistributedSampler
        # (DataConnector._requires_distributed_sampler): a DDP run on one device gets one too.
        connector = getattr(trainer, "_accelerator_connector", None)
        distributed = (bool(getattr(connector, "use_distributed_sampler", True))
                       and bool(getattr(connector, "is_distributed", replicas > 1)))
        return self.device_batches(device, num_replicas=replicas, rank=int(sampler_kwargs.get("rank", 0)),
                                   distributed=distributed)

    def device_batches(self, device: torch.device | str, *, num_replicas: int = 1, rank: int = 0,
                       distributed: bool = False) -> Any:
        """Training batches sliced from the split held on ``device`` (materialised on the first call),
        in the order the training DataLoader would give them; ``distributed``: this rank's shard, as a
        ``DistributedSampler`` seeded with Lightning's ``PL_GLOBAL_SEED`` deals it."""
        from datamodules.device_loader import DeviceBatches, EpochOrder, materialise

        self._ensure_setup()
        device = torch.device(device)
        if self._device_data is None or self._device_data[0] != device:
            assert self.train_dataset is not None
            x, y = materialise(self.train_dataset)
            self._device_data = (device, x.to(device), y.to(device))
        _, x, y = self._device_data
        order = EpochOrder(x.shape[0], num_replicas=num_replicas, rank=rank,
                           seed=int(os.getenv("PL_GLOBAL_SEED", 0)), distributed=distributed)
        return DeviceBatches(x, y, self.batch_size, self.drop_last, order, self.num_workers)

    def _log_on_device_once(self, trainer: Any, message: str) -> None:
        if not self._on_device_logged and getattr(trainer, "global_rank", 0) == 0:
            log.info(message)
        self._on_device_logged = True

    def val_dataloader(self) -> DataLoader:
        """Loader over the held-out split (no shuffling, keeps the last partial batch)."""
        self._ensure_setup()
        assert self.val_dataset is not None
        return self._loader(self.val_dataset, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over the test split (no shuffling, keeps the last partial batch)."""
        self._ensure_setup()
        assert self.test_dataset is not None
        return self._loader(self.test_dataset, shuffle=False, drop_last=False)
