"""Distributed training helpers."""
from __future__ import annotations

import logging
import random
import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class RankSeed(pl.Callback):
    """Give every DDP rank its own random stream once training starts (no-op on one process).

    ``seed_everything`` seeds every rank alike, which is right for building the networks (DDP also
    broadcasts rank 0's weights) but wrong for training: every rank would then draw the *same* noise
    z, so the fakes of the global batch would be ``world_size`` copies of one set. At train start
    each rank reseeds torch, numpy and random with ``base + global_rank`` (base: the seed that
    ``seed_everything`` set), so the ranks draw different z while a rerun with the same seed and
    world size draws the same ones. Data order is unaffected (the DistributedSampler has its own seed).
    """

    def __init__(self, base_seed: int | None = None) -> None:
        self.base_seed = base_seed

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size <= 1:
            return
        base = int(self.base_seed) if self.base_seed is not None else torch.initial_seed()
        seed = (base + trainer.global_rank) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        log.info("Rank %d of %d draws noise from seed %d.", trainer.global_rank, trainer.world_size, seed)
