"""Random-number state in checkpoints, for an exact resume.

Lightning restores weights, optimizers and loop counters, but not the random generators, so a resumed
run draws different noise z, different dropout masks and, above all, a different data order (the
shuffling sampler seeds itself from torch's global generator when each epoch's iterator is created).
This callback stores the torch (CPU and every CUDA device), numpy and Python generators in every
checkpoint (as tensors and plain numbers, so checkpoints stay loadable with ``weights_only=True``)
and puts them back while the checkpoint is restored, before Lightning creates the first data
iterator. Resuming from a checkpoint written at the end of an epoch (``epochNNN.ckpt``, and
``last.ckpt`` whenever it was written at an epoch end) then continues exactly as the uninterrupted
run would have: on the CPU the final weights are bit-identical. Limits: a checkpoint written in the
middle of an epoch (e.g. at the end of a ``max_generator_steps`` run) resumes with the right weights
and counters but Lightning restarts that epoch's data; under DDP only rank 0's generators are saved,
so each rank reseeds as ``RankSeed`` does instead; GPU kernels that are not deterministic
(``trainer.deterministic=false``) can still make a resumed GPU run drift.
"""
from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def capture_rng() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss": gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


class RNGState(pl.Callback):
    """Save the random generators in checkpoints and restore them on resume (see the module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        # Called while the checkpoint is assembled: the generators as they are at this step.
        return capture_rng()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called while the checkpoint is restored, before the first data iterator of the resumed run.
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            log.info("Not restoring the random generators under DDP (only rank 0's were saved).")
            return
        restore_rng(state_dict)
