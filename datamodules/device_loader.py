"""``dataset.on_device``: a small training set held as one tensor on the training device.

The training split is materialised once (values in ``value_range``, exactly as the dataset yields them),
moved to the device, and each epoch is shuffled and sliced there: no worker processes and no
host-to-device copy per step.

The sample order is the DataLoader's, drawn by torch's own samplers, so a run changes no number:

- one process: a ``RandomSampler`` seeds itself from torch's global generator when an epoch's batches
  begin, right after the DataLoader iterator has drawn its own base seed from the same generator
  (``_BaseDataLoaderIter.__init__``). Both draws are made here in that order. With persistent workers
  (``num_workers > 0``) a DataLoader makes its iterator once and resets it later, so only its first
  epoch draws a base seed; that is replicated too.
- DDP: Lightning gives a DataLoader a ``DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED)`` and
  calls ``sampler.set_epoch`` at every epoch start. ``DeviceBatches.sampler`` has ``set_epoch``, so
  Lightning calls it the same way, and the rank's shard comes from a real ``DistributedSampler``.
  Lightning leaves iterables that are not DataLoaders alone (``_prepare_dataloader``): it does not
  try to inject a sampler.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Subset, TensorDataset

from datamodules.transforms import TensorImageDataset, UInt8ToRange, UnitToRange

#: Share of the device's free memory (CUDA: ``torch.cuda.mem_get_info``; CPU: MemAvailable) that
#: the materialised training set may take. The rest is left to the networks and activations.
BUDGET_FRACTION = 0.25
ON_DEVICE_CHOICES = ("auto", True, False)


def parse_on_device(value: Any) -> bool | str:
    """``dataset.on_device`` as True, False or "auto"; anything else is a ValueError."""
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"dataset.on_device must be true, false or auto, got {value!r}")


def device_memory_budget(device: torch.device) -> tuple[int, str] | None:
    """Bytes the training set may take on ``device``, and how they were found; None: unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * BUDGET_FRACTION), f"{BUDGET_FRACTION:.0%} of the {free} bytes free on {device}"
    if device.type == "cpu":
        available = _available_ram()
        if available is None:
            return None
        return int(available * BUDGET_FRACTION), f"{BUDGET_FRACTION:.0%} of the {available} bytes of RAM available"
    return None


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _unwrap(dataset: Dataset) -> tuple[Dataset, Tensor | None]:
    """The dataset under any ``Subset`` wrappers, and the indices into it (None: all of it)."""
    indices: Tensor | None = None
    while isinstance(dataset, Subset):
        own = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        indices = own if indices is None else own[indices]
        dataset = dataset.dataset
    return dataset, indices


def _elementwise(transform: Any) -> bool:
    """Transforms that give the same values applied to a whole (N, C, H, W) tensor as item by item:
    element-wise arithmetic, and centre padding (F.pad pads the last two dimensions either way)."""
    if transform is None or isinstance(transform, UnitToRange):
        return True
    return isinstance(transform, UInt8ToRange) and transform.resize in (None, "pad")


def source_kind(dataset: Dataset) -> tuple[str | None, str]:
    """How the training set can be held on the device: ``"memory"`` (its samples already lie in
    tensors, and every item is a fixed function of them), ``"files"`` (deterministic items read from
    files: only for ``on_device=true``) or None, with the reason in words."""
    from torch.utils.data import IterableDataset

    base, _ = _unwrap(dataset)
    name = type(base).__name__
    if isinstance(base, IterableDataset):
        return None, f"{name} is a stream (no index to shuffle)"
    if isinstance(base, TensorDataset):
        return "memory", f"{name} in memory"
    if isinstance(base, TensorImageDataset):
        t = base.transform
        if t is None or isinstance(t, (UInt8ToRange, UnitToRange)):
            return "memory", f"{name} in memory"
        return None, (f"its items pass through {type(t).__name__}, which on_device does not know to be "
                      "deterministic (a random transform would be frozen at one draw)")
    from datamodules.image_files import ImageFileDataset

    file_types: tuple[type, ...] = (ImageFileDataset,)
    try:
        from datamodules.image_zip import ZipImageDataset

        file_types += (ZipImageDataset,)
    except ImportError:  # the zip reader is optional here
        pass
    if isinstance(base, file_types):
        return "files", f"{name} reads every item from a file (on_device=true decodes them all once)"
    return None, f"{name} is not a dataset type on_device knows to yield the same item every time"


def materialise(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Every item of ``dataset`` stacked in index order, on the CPU: ``x`` as the dataset yields it and
    int64 labels ``y``. Values are identical to what a DataLoader collates."""
    base, indices = _unwrap(dataset)
    if isinstance(base, TensorDataset):
        x = base.tensors[0] if indices is None else base.tensors[0][indices]
        if len(base.tensors) > 1:
            y = base.tensors[1] if indices is None else base.tensors[1][indices]
        else:
            y = torch.full((x.shape[0],), -1, dtype=torch.int64)
        return x.clone(), y.to(torch.int64).clone()
    if isinstance(base, TensorImageDataset) and _elementwise(base.transform):
        images = base.images if indices is None else base.images[indices]
        labels = base.labels if indices is None else base.labels[indices]
        x = images if base.transform is None else base.transform(images)
        if x.data_ptr() == base.images.data_ptr():
            x = x.clone()
        return x, labels.clone()
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.stack([torch.as_tensor(item[1], dtype=torch.int64) for item in items])
    return x, y


class EpochOrder:
    """The order of one rank's samples in each epoch, as the DataLoader path draws it (see the module
    docstring). Lightning finds it as ``DeviceBatches.sampler`` and calls ``set_epoch``."""

    def __init__(self, num_samples: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 distributed: bool = False) -> None:
        self.num_samples = num_samples
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.distributed = distributed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.distributed:
            return math.ceil(self.num_samples / self.num_replicas)
        return self.num_samples

    def indices(self) -> Tensor:
        """This epoch's sample indices (int64, CPU); one process draws the seed from torch's global
        generator, as ``RandomSampler`` does."""
        if self.distributed:
            return shard_indices(self.num_samples, self.num_replicas, self.rank, self.seed, self.epoch)
        return torch.as_tensor(list(RandomSampler(range(self.num_samples))), dtype=torch.int64)


def shard_indices(num_samples: int, num_replicas: int, rank: int, seed: int, epoch: int) -> Tensor:
    """One rank's sample indices for an epoch under DDP (no draw from the global generator)."""
    sampler = DistributedSampler(range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.as_tensor(list(sampler), dtype=torch.int64)


class DeviceBatches:
    """Batches ``(x[idx], y[idx])`` cut from tensors that already lie on the training device.

    Each ``iter()`` draws from torch's global generator exactly what ``iter(DataLoader)`` draws, at the
    same moments: the iterator's base seed at once; the sampler's seed at the first batch
    (``num_workers=0``) or at once (worker processes prefetch indices, and a persistent iterator is
    made once per loader and reset afterwards, drawing no new base seed). This matters because
    Lightning calls ``iter()`` on a reloaded loader twice per epoch (``FitLoop.setup_data`` and
    ``_TrainingEpochLoop.on_run_start``). Lightning's check that a non-DataLoader is iterable
    (``_check_dataloader_iterable``, which DataLoaders skip) gets an empty iterator and draws nothing.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, drop_last: bool, order: EpochOrder,
                 num_workers: int = 0) -> None:
        self.x, self.y = x, y
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler = order  # the name Lightning looks for when it sets each epoch
        self.persistent_workers = num_workers > 0  # as GANDataModule._loader makes its DataLoader
        self._iterator_made = False

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if sys._getframe(1).f_code.co_name == "_check_dataloader_iterable":
            return iter(())
        if not (self.persistent_workers and self._iterator_made):
            torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
        self._iterator_made = True
        return self._batches(self.sampler.indices() if self.persistent_workers else None)

    def _batches(self, order: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        if order is None:
            order = self.sampler.indices()
        order = order.to(self.x.device)
        stop = len(self) * self.batch_size if self.drop_last else order.numel()
        for start in range(0, stop, self.batch_size):
            chosen = order[start:start + self.batch_size]
            yield self.x.index_select(0, chosen), self.y.index_select(0, chosen)


def measure(steps: int = 300, rounds: int = 3, warmup: int = 20, accelerator: str = "cpu") -> list[dict[str, float]]:
    """Generator steps/s of the default recipe (train.yaml's defaults) with ``on_device`` false and true,
    in this one process: each round runs both sides on fresh Trainers and networks, in alternating
    order, timing the steps after ``warmup``."""
    import time

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from gan_modules.build import build_module
    from gan_modules.config import compose_config
    from gan_modules.steps import trainer_length

    def side(on_device: bool) -> float:
        cfg = compose_config([f"trainer.accelerator={accelerator}", f"dataset.on_device={str(on_device).lower()}"])
        pl.seed_everything(0, workers=True)
        module, datamodule = build_module(cfg), instantiate(cfg.dataset)
        marks: list[float] = []

        class Clock(pl.Callback):
            def on_train_batch_end(self, *args: Any) -> None:
                marks.append(time.perf_counter())

        trainer = pl.Trainer(accelerator=accelerator, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()],
                             **trainer_length(steps, module))
        trainer.fit(module, datamodule=datamodule)
        if accelerator != "cpu":
            torch.cuda.synchronize()
        return (steps - warmup) / (marks[-1] - marks[warmup - 1])

    records = []
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        records.append({f"on_device={str(o).lower()}": side(o) for o in order})
    return records


if __name__ == "__main__":
    import argparse
    import json
    import statistics

    parser = argparse.ArgumentParser(description="steps/s of the default recipe, dataset.on_device false vs true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    rounds = measure(args.steps, args.rounds, accelerator=args.accelerator)
    for r in rounds:
        print(json.dumps({k: round(v, 2) for k, v in r.items()}))
    ratios = [r["on_device=true"] / r["on_device=false"] for r in rounds]
    print(f"median ratio true/false: {statistics.median(ratios):.3f} (per round: {', '.join(f'{x:.3f}' for x in ratios)})")
