"""A training step's figures (``d_loss``, ``g_loss``, ...), kept on the device until someone reads them.

Reading a CUDA tensor on the host (``.item()``, ``.tolist()``, ``float(t)``) waits for every kernel
queued before it. A small GAN's step takes a few milliseconds, so one such read per step costs a
visible share of the GPU's time. So ``training_step`` returns a :class:`StepStatistics`: a dict of
names to 0-d tensors left on the device, which also knows how to read all of them at once. The
callbacks that watch every step (the NaN guard, the collapse watch, the training plots) keep these
records and read them in blocks with :func:`read_back`, every ``read_every_n_steps`` steps: one
transfer for the whole block, and records already read are not read again, so callbacks on the same
schedule share it. Lightning's loggers read the values only on the steps they write.

A plain ``dict`` of tensors or floats (an autoencoder's ``training_step`` under automatic
optimisation, whose dict Lightning copies) is wrapped by :meth:`StepStatistics.of`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

# Steps between the per-step callbacks' reads, unless a callback is given its own: the loggers'
# default interval (trainer.log_every_n_steps), so that their read and the callbacks' fall on the
# same steps.
DEFAULT_READ_EVERY_N_STEPS = 50


class StepStatistics(dict):
    """One training step's scalar figures: a dict of names to 0-d tensors left on the device.

    ``float(stats["d_loss"])`` works as for any dict of tensors (and waits for the device);
    :meth:`host` and :func:`read_back` read every value at once, and only the first time.

    Args:
        stats: names to 0-d tensors (or Python numbers).
        step: the training step these figures belong to (the generator step count after the step).
    """

    def __init__(self, stats: Mapping[str, Any], step: int) -> None:
        names = [str(k) for k in stats]
        tensors = [v.detach().float().reshape(()) if isinstance(v, Tensor) else torch.tensor(float(v))
                   for v in stats.values()]
        device = next((t.device for t in tensors if t.device.type != "cpu"), None)
        if device is not None:
            tensors = [t.to(device) for t in tensors]  # Python numbers join the device's values
        self._stacked = torch.stack(tensors) if tensors else torch.zeros(0)
        self._names = tuple(names)  # the stacked order, kept even if someone edits the dict
        super().__init__(zip(names, self._stacked.unbind(0)))
        self.step = int(step)
        self._host: dict[str, float] | None = None

    @classmethod
    def of(cls, outputs: Any, step: int) -> StepStatistics | None:
        """``outputs`` as a record: itself when it is one, its scalars when a mapping, else None."""
        if isinstance(outputs, StepStatistics):
            return outputs
        if not isinstance(outputs, Mapping):
            return None
        scalars = {k: v for k, v in outputs.items()
                   if (isinstance(v, Tensor) and v.numel() == 1) or (isinstance(v, (int, float)) and not isinstance(v, bool))}
        return cls(scalars, step)

    @property
    def is_read(self) -> bool:
        return self._host is not None

    def host(self) -> dict[str, float]:
        """All values as floats (one device read, the first time)."""
        if self._host is None:
            read_back([self])
        return self._host

    def copy(self) -> StepStatistics:
        # Lightning's manual-optimisation loop copies what training_step returns; the callbacks get
        # the record itself, so that one read serves them all.
        return self

    def __repr__(self) -> str:
        shown = self._host if self._host is not None else "on the device"
        return f"StepStatistics(step={self.step}, {list(self._names)}, {shown})"


def read_back(records: Sequence[StepStatistics], extra: Sequence[Tensor] = ()) -> list[float]:
    """Read every unread record (and ``extra`` 0-d tensors) to the host in one transfer.

    Returns the ``extra`` values as floats.
    """
    pending = [r for r in records if r._host is None]
    parts = [r._stacked for r in pending] + [t.detach().float().reshape(1) for t in extra]
    if not parts:
        return []
    device = next((p.device for p in parts if p.device.type != "cpu"), None)
    if device is not None:
        parts = [p.to(device) for p in parts]
    values = torch.cat(parts).tolist()  # the one synchronisation
    at = 0
    for record in pending:
        n = len(record._names)
        record._host = dict(zip(record._names, values[at:at + n]))
        at += n
    return values[at:]


class PendingSteps:
    """The records a callback has received and not yet read; it reads them in blocks.

    Args:
        read_every_n_steps: read when the step count reaches a multiple of this (1: every step).
    """

    def __init__(self, read_every_n_steps: int = DEFAULT_READ_EVERY_N_STEPS) -> None:
        if isinstance(read_every_n_steps, bool) or int(read_every_n_steps) < 1:
            raise ValueError(f"read_every_n_steps must be a positive integer, got {read_every_n_steps!r}.")
        self.read_every_n_steps = int(read_every_n_steps)
        self.records: list[StepStatistics] = []

    def add(self, outputs: Any, step: int) -> bool:
        """Keep this step's record; True when the block is due to be read."""
        record = StepStatistics.of(outputs, step)
        if record is not None:
            self.records.append(record)
        return step % self.read_every_n_steps == 0

    def take(self, extra: Sequence[Tensor] = ()) -> tuple[list[StepStatistics], list[float]]:
        """The kept records, read (one transfer with ``extra``), and forget them."""
        records, self.records = self.records, []
        extra_values = read_back(records, extra)
        return records, extra_values

    def clear(self) -> None:
        self.records = []

    def __len__(self) -> int:
        return len(self.records)
