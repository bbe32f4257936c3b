"""Sample grids from a fixed z every N generator steps (a scatter plot for 2-D data)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from gan_modules.atomic_files import save_figure
from gan_modules.images import log_image_file, save_grid
from gan_modules.nets.common import eval_mode
from gan_modules.nets.conditional import call_generator, cycling_labels
from gan_modules.steps import training_steps


class SampleGrid(pl.Callback):
    """Render the generator on the same noise throughout training, so grids are comparable.

    Writes ``<dirpath>/step_000500.png`` every ``every_n_steps`` generator steps and
    ``<dirpath>/final.png`` at the end, and hands each picture to the loggers that take images.
    Works with any module that has ``sampling_generator`` and ``z_dim`` (a GAN, a VAE's decoder);
    does nothing when ``sampling_generator`` is None (a plain autoencoder).
    For vector samples of dimension 2 it draws a scatter plot over real data instead.
    For a conditional model the labels cycle over the classes (sample i gets class i mod K) and the
    grid is K images wide (``nrow`` is then unused): each column is one class, each row K samples.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 500, num_samples: int = 64, nrow: int = 8, seed: int = 0,
                 num_points: int = 2500) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.samples.every_n_steps must be >= 1, got {every_n_steps}.")
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.num_samples, self.nrow = every_n_steps, num_samples, nrow
        self.seed, self.num_points = seed, num_points
        self.fixed_z: torch.Tensor | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        generator = pl_module.sampling_generator
        if self.fixed_z is None and generator is not None:
            n = self.num_samples if len(generator.out_shape) > 1 else self.num_points
            self.fixed_z = torch.randn(n, pl_module.z_dim, generator=torch.Generator().manual_seed(self.seed))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = training_steps(trainer, pl_module)
        if step % self.every_n_steps == 0:
            self.render(trainer, pl_module, f"step_{step:06d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.render(trainer, pl_module, "final")

    @rank_zero_only
    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> Path | None:
        generator = pl_module.sampling_generator  # the EMA generator when there is one
        if generator is None:
            return None  # a plain autoencoder has nothing to sample from
        num_classes = getattr(pl_module, "num_classes", None)  # set for conditional GANs only
        labels = None if num_classes is None else cycling_labels(len(self.fixed_z), num_classes, pl_module.device)
        with eval_mode(generator), torch.no_grad():
            samples = call_generator(generator, self.fixed_z.to(pl_module.device), labels).float().cpu()
        path = self.dirpath / f"{name}.png"
        if samples.dim() == 4:
            save_grid(samples, path, generator.output_range, nrow=self.nrow if num_classes is None else num_classes)
        elif samples.dim() == 2 and samples.shape[1] == 2:
            self._scatter(samples, trainer, path, step=training_steps(trainer, pl_module))
        else:
            return path  # no picture for other vector data
        log_image_file(trainer, "samples", path, training_steps(trainer, pl_module))
        return path

    def _scatter(self, samples: torch.Tensor, trainer: pl.Trainer, path: Path, step: int) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        dataset = getattr(trainer.datamodule, "train_dataset", None) if trainer.datamodule is not None else None
        if dataset is not None:
            real = torch.stack([dataset[i][0] for i in range(min(len(dataset), self.num_points))])
            ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:blue", alpha=0.3, label="data")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", alpha=0.5, label="generated")
        ax.set_title(f"generator step {step}")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path, dpi=100, bbox_inches="tight")
        plt.close(fig)

    def state_dict(self) -> dict[str, Any]:
        return {"fixed_z": self.fixed_z}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fixed_z = state_dict["fixed_z"]
