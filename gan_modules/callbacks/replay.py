"""Experience replay for the discriminator: show D some fakes from earlier generators.

D then keeps penalising regions that G has left, which damps the cycling between modes that a D
trained only on the current G allows (Shrivastava et al. 2017 keep a history of generated images
and fill half of each fake batch from it; Pfau & Vinyals 2016 discuss replay for GANs).
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor


class ReplayBuffer(pl.Callback):
    """A buffer of past fakes that replaces part of every discriminator step's fake batch.

    At each D-step, with fake batch size ``B`` and ``k = round(fraction * B)``:

    1. ``min(k, filled)`` fakes at random positions of the batch are replaced by distinct samples
       drawn uniformly from the buffer (so exactly ``k`` once the buffer holds at least ``k``);
    2. every fresh fake of the step (before replacement) is offered to the buffer by **reservoir
       sampling** (Vitter's algorithm R): until the buffer is full each one is stored; after that,
       the ``t``-th fake ever offered replaces a random slot with probability ``capacity / t``. The
       buffer is therefore a uniform sample over all fakes generated so far, not only recent ones.

    The generator step is untouched. Buffer contents, fill count, number of fakes offered and the
    RNG state are saved in checkpoints, so a resumed run continues with the same buffer. If the
    sample shape changes (progressive growing), the buffer starts afresh.

    Memory: ``capacity * prod(sample shape) * 4`` bytes (float32), by default on the device the fakes
    are on. There, storing and drawing are device operations queued behind the step, so the buffer
    adds no host synchronisation to a GPU step; ``storage="cpu"`` keeps it in host RAM instead (for a
    buffer larger than the GPU can spare), at the cost of copies between host and device, and so a
    sync, in every D-step. The random decisions come from a CPU generator either way, so both give the same samples.

    Args:
        capacity: the most samples the buffer holds.
        fraction: share of each fake batch taken from the buffer, in [0, 1].
        seed: seed of the buffer's own random generator (positions, draws and reservoir decisions).
        storage: ``"device"`` (the fakes' device) or ``"cpu"``.
    """

    def __init__(self, capacity: int = 5000, fraction: float = 0.5, seed: int = 0, storage: str = "device") -> None:
        if int(capacity) < 1:
            raise ValueError(f"callbacks.replay.capacity must be >= 1, got {capacity}.")
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"callbacks.replay.fraction must be in [0, 1], got {fraction}.")
        if storage not in ("device", "cpu"):
            raise ValueError(f"callbacks.replay.storage must be 'device' or 'cpu', got {storage!r}.")
        self.capacity, self.fraction, self.storage = int(capacity), float(fraction), storage
        self.rng = torch.Generator().manual_seed(int(seed))
        self.buffer: Tensor | None = None  # (capacity, *sample shape), allocated at the first push
        self.filled = 0  # slots in use
        self.offered = 0  # fakes ever offered to the reservoir

    # --- the hook GANModule calls on each D-step's fake batch ------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.replace_fakes not in pl_module.fake_hooks:
            pl_module.fake_hooks.append(self.replace_fakes)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.replace_fakes in pl_module.fake_hooks:
            pl_module.fake_hooks.remove(self.replace_fakes)

    def replace_fakes(self, fake: Tensor) -> Tensor:
        """Return ``fake`` with some samples swapped for buffered ones; store fresh fakes."""
        fresh = fake.detach()
        if self.buffer is not None and self.buffer.shape[1:] != fresh.shape[1:]:
            self._reset()
        self._place(fresh.device)
        mixed = fresh
        take = min(round(self.fraction * fresh.shape[0]), self.filled)
        if take > 0:
            positions = torch.randperm(fresh.shape[0], generator=self.rng)[:take]
            slots = torch.randperm(self.filled, generator=self.rng)[:take]
            mixed = fresh.clone()
            drawn = self.buffer[slots.to(self.buffer.device, non_blocking=True)]
            mixed[positions.to(fresh.device, non_blocking=True)] = drawn.to(device=fresh.device, dtype=fresh.dtype)
        self.push(fresh)
        return mixed

    def push(self, samples: Tensor) -> None:
        """Offer ``samples`` to the reservoir, in order, as algorithm R would one at a time."""
        if self.buffer is None:
            where = samples.device if self.storage == "device" else torch.device("cpu")
            self.buffer = torch.zeros(self.capacity, *samples.shape[1:], dtype=torch.float32, device=where)
        self._place(samples.device)
        n = samples.shape[0]
        free = min(self.capacity - self.filled, n)
        slots = list(range(self.filled, self.filled + free))  # not full yet: the next empty slots
        # Once full, the t-th fake ever offered (t counted from 1) draws j uniformly in [0, t) and
        # goes to slot j when j < capacity, i.e. with probability capacity / t.
        t = torch.arange(self.offered + free + 1, self.offered + n + 1, dtype=torch.float64)
        j = (torch.rand(n - free, generator=self.rng, dtype=torch.float64) * t).long().tolist()
        slots += [slot if slot < self.capacity else -1 for slot in j]
        self.filled += free
        self.offered += n
        # Several samples of one batch may draw the same slot: the later one wins, as in sequence.
        slot_of = {slot: i for i, slot in enumerate(slots) if slot >= 0}
        if slot_of:
            rows = torch.tensor(list(slot_of.values())).to(samples.device, non_blocking=True)
            targets = torch.tensor(list(slot_of.keys())).to(self.buffer.device, non_blocking=True)
            self.buffer[targets] = samples[rows].to(device=self.buffer.device, dtype=torch.float32)

    def _place(self, device: torch.device) -> None:
        """Keep the buffer where ``storage`` says: on the fakes' device, or on the CPU."""
        target = device if self.storage == "device" else torch.device("cpu")
        if self.buffer is not None and self.buffer.device != target:
            self.buffer = self.buffer.to(target)

    def _reset(self) -> None:
        self.buffer, self.filled, self.offered = None, 0, 0

    # --- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": None if self.buffer is None else self.buffer[: self.filled].to("cpu", copy=True),
            "filled": self.filled,
            "offered": self.offered,
            "rng_state": self.rng.get_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._reset()
        saved = state_dict["buffer"]
        if saved is not None:
            self.buffer = torch.zeros(self.capacity, *saved.shape[1:], dtype=torch.float32)
            keep = min(len(saved), self.capacity)  # a smaller capacity on resume keeps the first ones
            self.buffer[:keep] = saved[:keep]
            self.filled = keep
        self.offered = int(state_dict["offered"])
        self.rng.set_state(state_dict["rng_state"])
