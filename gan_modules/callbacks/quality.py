"""Score the generator during training and keep the best checkpoint by a chosen metric.

Every ``every_n_steps`` generator steps: ``num_samples`` samples from a fixed noise are scored
against ``num_real`` held-out real images (cached features, so each check costs one generator
pass and one feature pass), the figures are logged as ``quality/<metric>``, and
``<dirpath>/best.ckpt`` is rewritten when ``monitor`` improves. 2-D toy data is scored with the
mode-coverage protocol instead (monitor e.g. ``high_quality`` with mode ``max``).

``features=inception`` scores in the standard FID Inception network's space instead (FID, KID and IS;
weights from ``inception_weights`` or torch hub's cache, see metrics/inception.py), on the training
device. The real images' features are cached across runs (``stats_cache``, metrics/real_stats.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from gan_modules.images import to_unit_range
from gan_modules.metrics.evaluation import embed, network_name, sample_set, score_features, score_inception, take
from gan_modules.metrics.features import load_feature_net
from gan_modules.metrics.inception import load_inception
from gan_modules.metrics.real_stats import RealFeatures, default_cache_dir, real_features
from gan_modules.metrics.modes import mode_statistics
from gan_modules.nets.common import eval_mode
from gan_modules.nets.conditional import cycling_labels
from gan_modules.nets.progressive import fully_grown
from gan_modules.sampling import sample_in_batches
from gan_modules.steps import training_steps


class SampleQuality(pl.Callback):
    def __init__(self, dirpath: str, every_n_steps: int = 1000, num_samples: int = 2000, num_real: int = 2000,
                 monitor: str = "fid", mode: str = "min", feature_net: str | None = None, seed: int = 0,
                 features: str = "own", inception_weights: str | None = None, stats_cache: str | None = "auto") -> None:
        if features not in ("own", "inception"):
            raise ValueError(f"callbacks.quality.features must be 'own' or 'inception', got {features!r}.")
        if features == "inception" and feature_net is not None:
            raise ValueError("callbacks.quality.feature_net names one of the project's own networks; with "
                             "features=inception set callbacks.quality.inception_weights instead.")
        if mode not in ("min", "max"):
            raise ValueError(f"callbacks.quality.mode must be 'min' or 'max', got {mode!r}.")
        if every_n_steps < 1 or num_samples < 2 or num_real < 2:
            raise ValueError("callbacks.quality needs every_n_steps >= 1 and num_samples, num_real >= 2.")
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.num_samples, self.num_real = every_n_steps, num_samples, num_real
        self.monitor, self.mode, self.feature_net_name, self.seed = monitor, mode, feature_net, seed
        self.features, self.inception_weights = features, inception_weights
        self.stats_cache = default_cache_dir() if stats_cache == "auto" else stats_cache
        self.best: float | None = None
        self._real: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None:
            raise ValueError("callbacks.quality needs the training data as a datamodule (train.py passes one).")
        if pl_module.sampling_generator is None:
            raise ValueError("callbacks.quality scores generated samples, and this autoencoder has no prior to sample "
                             "from: use model=vae, or callbacks=default.")
        dm.setup("fit")
        self._toy = not dm.is_image
        if self._toy:
            return
        if self.features == "inception":  # a missing or wrong weights file stops here, before training
            self.net, self.info = load_inception(self.inception_weights, options="callbacks.quality.")
        else:
            name = self.feature_net_name or getattr(dm, "feature_net", None)  # dataset.feature_net
            if name is None:
                raise ValueError(f"No feature network fits {type(dm).__name__} (dataset.feature_net is null): set "
                                 "dataset.feature_net or callbacks.quality.feature_net, callbacks.quality.features="
                                 "inception, or callbacks.quality=null.")
            self.net, self.info = load_feature_net(name)
        x, y = take(dm.test_dataset, self.num_real, self.seed)
        self._real_images = (to_unit_range(x, dm.value_range), y, type(dm).__name__)
        self._real = None  # embedded at the first check, once the module (and Inception) sit on their device

    def real_features(self, pl_module: pl.LightningModule) -> RealFeatures:
        """The held-out images' features, embedded once (or read from the cache)."""
        if self._real is None:
            images, labels, dataset = self._real_images
            describe = {"dataset": dataset, "split": "test",
                        "network": network_name(self.info), "network_sha256": self.info["sha256"]}
            if self.features == "inception":
                self.net.to(pl_module.device)
            self._real = real_features(images, labels, lambda x: embed(self.net, x), describe, self.stats_cache)
        return self._real

    @torch.no_grad()
    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        generator = pl_module.sampling_generator  # the EMA generator when there is one
        z = torch.randn(self.num_samples, pl_module.z_dim, generator=torch.Generator().manual_seed(self.seed))
        num_classes = getattr(pl_module, "num_classes", None)  # conditional GANs: every class equally often
        labels = None if num_classes is None else cycling_labels(self.num_samples, num_classes)
        with eval_mode(generator):
            fake = sample_in_batches(generator, z, labels, device=pl_module.device)
        dm = trainer.datamodule
        if self._toy:
            stats = mode_statistics(fake, dm.modes, dm.std)
            return {k: float(v) for k, v in stats.items() if isinstance(v, (int, float))}
        real = self.real_features(pl_module)
        fake = (to_unit_range(fake, generator.output_range) * 255).round() / 255  # as an npz would store it
        kid_subset_size = min(1000, self.num_samples, self.num_real)
        if self.features == "inception":
            self.net.to(pl_module.device)
            return score_inception(real, sample_set(self.net, fake), seed=self.seed, kid_subset_size=kid_subset_size)
        return score_features((real.features, real.probs), embed(self.net, fake), real.labels, self.net.num_classes,
                              kid_subset_size=kid_subset_size, seed=self.seed)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # While a progressive generator grows, its samples are smaller than the data: score (and keep
        # best.ckpt) only once it works at full resolution.
        if not fully_grown(pl_module.sampling_generator):
            return
        if training_steps(trainer, pl_module) % self.every_n_steps == 0:
            self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        metrics = self.score(trainer, pl_module)
        if self.monitor not in metrics:
            raise ValueError(f"callbacks.quality.monitor={self.monitor!r} is not a computed metric; "
                             f"choose one of {sorted(metrics)}.")
        pl_module.log_dict({f"quality/{k}": v for k, v in metrics.items()}, on_step=True, on_epoch=False)
        value = metrics[self.monitor]
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
            trainer.save_checkpoint(self.dirpath / "best.ckpt")
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]
