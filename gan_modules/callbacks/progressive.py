"""Progressive growing (ProGAN): a callback owns the schedule and tells the networks and the data.

The schedule is counted in real images shown to D (``images_seen``), as in the paper: stage 0
(4x4) trains for ``stabilize_images``; every later stage first fades in for ``fade_in_images``
(alpha rising linearly from 0 to 1), then trains stable for ``stabilize_images``. Both lengths,
and the batch size, can be given per resolution (``{4: 8000, 8: 16000}``; resolutions not listed
take the ``default`` entry, or the dataset's batch size).

After each batch the callback moves G (and its EMA copy) and D to the stage and alpha of
``images_seen`` and tells the datamodule which resolution and alpha to serve (it downsamples
and blends real batches on the device). When a stage change brings a new batch size, the epoch is
ended early so that Lightning rebuilds the loader (``trainer.reload_dataloaders_every_n_epochs=1``
is then required). When the schedule is done, training stops (``stop_when_done``), so train with
``trainer.max_epochs=-1`` and let the schedule say how long.

``images_seen`` is saved in checkpoints (the callback's state) and stage/alpha in the networks'
buffers, so a run resumed in the middle of a fade-in continues at the same alpha.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from datamodules.base import split_batch
from gan_modules.nets.progressive import ProgressiveNet
from gan_modules.steps import logs_this_batch

PerResolution = int | Mapping[Any, int] | None


def _per_resolution(name: str, value: PerResolution, resolution: int, fallback: int | None) -> int | None:
    """``value`` for ``resolution``: a plain number, or a mapping by resolution with an optional ``default``."""
    if value is None:
        return fallback
    if isinstance(value, Mapping):
        keys = {str(k) for k in value}
        if not keys <= {str(4 * 2**s) for s in range(16)} | {"default"}:
            raise ValueError(f"progressive.{name} maps resolutions (4, 8, 16, ...) or 'default' to numbers; "
                             f"got keys {sorted(keys)}.")
        table = {str(k): v for k, v in value.items()}
        return int(table.get(str(resolution), table.get("default", fallback)))
    return int(value)


@dataclass(frozen=True)
class GrowthSchedule:
    """Phase lengths in images for each stage: ``fade_in[s]`` (0 for stage 0) then ``stabilize[s]``."""

    fade_in: tuple[int, ...]
    stabilize: tuple[int, ...]

    @property
    def total_images(self) -> int:
        return sum(self.fade_in) + sum(self.stabilize)

    def progress(self, images_seen: int) -> tuple[int, float]:
        """(stage, alpha) after ``images_seen`` images; past the end, the last stage at alpha 1."""
        start = 0
        for stage, (fade, stable) in enumerate(zip(self.fade_in, self.stabilize)):
            if images_seen < start + fade:
                return stage, (images_seen - start) / fade
            start += fade + stable
            if images_seen < start:
                return stage, 1.0
        return len(self.stabilize) - 1, 1.0


class ProgressiveGrowing(Callback):
    """Grow G and D from 4x4 to the data's resolution on a schedule counted in images seen."""

    def __init__(self, fade_in_images: PerResolution = 600_000, stabilize_images: PerResolution = 600_000,
                 batch_sizes: PerResolution = None, stop_when_done: bool = True) -> None:
        self.fade_in_images, self.stabilize_images = fade_in_images, stabilize_images
        self.batch_sizes = batch_sizes
        self.stop_when_done = bool(stop_when_done)
        self.images_seen = 0
        self.schedule: GrowthSchedule | None = None
        self.num_stages = 0

    # --- schedule -----------------------------------------------------------------------------
    def _resolution(self, stage: int) -> int:
        return 4 * 2**stage

    def build_schedule(self, num_stages: int) -> GrowthSchedule:
        fade, stable = [], []
        for stage in range(num_stages):
            res = self._resolution(stage)
            f = 0 if stage == 0 else _per_resolution("fade_in_images", self.fade_in_images, res, None)
            s = _per_resolution("stabilize_images", self.stabilize_images, res, None)
            if f is None or s is None or f < 0 or s < 0 or (stage > 0 and f == 0 and s == 0):
                raise ValueError(f"progressive: give non-negative fade_in_images and stabilize_images for "
                                 f"{res}x{res} (got {f} and {s}).")
            fade.append(f)
            stable.append(s)
        return GrowthSchedule(tuple(fade), tuple(stable))

    def batch_size_at(self, stage: int, default: int) -> int:
        return _per_resolution("batch_sizes", self.batch_sizes, self._resolution(stage), default)  # type: ignore[return-value]

    # --- wiring -------------------------------------------------------------------------------
    @staticmethod
    def _networks(pl_module: pl.LightningModule) -> list[ProgressiveNet]:
        nets = [getattr(pl_module, name, None) for name in ("generator", "generator_ema", "discriminator")]
        nets = [n for n in nets if n is not None]
        if len(nets) < 2 or not all(isinstance(n, ProgressiveNet) for n in nets):
            raise ValueError("callbacks=progressive grows progressive networks only: use model=progan or "
                             "model=stylegan (or drop the progressive callback to train at a fixed resolution).")
        if len({n.num_stages for n in nets}) != 1:
            raise ValueError("The generator and discriminator grow to different resolutions; build both for dataset.shape.")
        return nets  # type: ignore[return-value]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.num_stages = self._networks(pl_module)[0].num_stages
        self.schedule = self.build_schedule(self.num_stages)
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "set_progress"):
            raise ValueError("callbacks=progressive needs a GANDataModule (it serves each stage's resolution).")
        self.full_batch_size = int(datamodule.batch_size)
        sizes = {self.batch_size_at(s, self.full_batch_size) for s in range(self.num_stages)}
        if len(sizes) > 1 and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError("progressive.batch_sizes changes the batch size between resolutions: set "
                             "trainer.reload_dataloaders_every_n_epochs=1 so the loader is rebuilt at each stage "
                             "(the progressive experiment configs do).")

    def progress(self) -> tuple[int, float]:
        assert self.schedule is not None, "setup has not run"
        return self.schedule.progress(self.images_seen)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        stage, alpha = self.progress()
        for net in self._networks(pl_module):
            net.set_progress(stage, alpha)
        trainer.datamodule.set_progress(self._resolution(stage), alpha, self.batch_size_at(stage, self.full_batch_size))
        return stage

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)  # also after a resume: images_seen came from the checkpoint

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        old_stage = pl_module.generator.stage_index
        old_batch = trainer.datamodule.batch_size
        real, _ = split_batch(batch)
        self.images_seen += int(real.shape[0]) * trainer.world_size
        stage = self._apply(trainer, pl_module)
        if stage != old_stage and trainer.datamodule.batch_size != old_batch:
            pl_module.end_epoch_early = True  # GANModule ends the epoch; the loader is rebuilt
        if self.stop_when_done and self.images_seen >= self.schedule.total_images:
            trainer.should_stop = True
        if logs_this_batch(trainer):
            pl_module.log_dict({"resolution": float(self._resolution(stage)), "alpha": pl_module.generator.alpha_value,
                                "kimg": self.images_seen / 1000.0}, on_step=True, on_epoch=False)

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"images_seen": self.images_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.images_seen = int(state_dict["images_seen"])
