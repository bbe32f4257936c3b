"""Pictures of what an autoencoder learned: reconstructions, interpolations and a map of its codings.

All three work on the same fixed validation images (the first ones of the datamodule's validation
split), so pictures from different epochs and runs are comparable.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from gan_modules.atomic_files import save_figure
from gan_modules.images import log_image_file, save_grid
from gan_modules.nets.common import eval_mode


@contextmanager
def evaluating(network: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no input corruption, VAE codings = mean) and no gradients, restored afterwards."""
    with eval_mode(network), torch.no_grad():
        yield network


def validation_images(trainer: pl.Trainer, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` images and labels of the validation split (else test, else train)."""
    datamodule = trainer.datamodule
    datamodule.setup("fit")
    dataset = next(d for d in (datamodule.val_dataset, datamodule.test_dataset, datamodule.train_dataset) if d is not None)
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([item[0] for item in items]), torch.as_tensor([int(item[1]) for item in items])


def _output_range(pl_module: pl.LightningModule) -> Any:
    return pl_module.network.output_range


class ReconstructionGrid(pl.Callback):
    """Inputs over their reconstructions: ``<dirpath>/reconstructions_epoch_NNN.png`` and ``reconstructions.png``.

    Rows alternate: ``nrow`` inputs, then the same inputs reconstructed.
    """

    def __init__(self, dirpath: str, num_images: int = 16, nrow: int = 8, every_n_epochs: int = 1) -> None:
        if num_images < 1 or nrow < 1 or every_n_epochs < 1:
            raise ValueError("callbacks.reconstructions: num_images, nrow and every_n_epochs must be >= 1.")
        self.dirpath, self.num_images, self.nrow, self.every_n_epochs = Path(dirpath), num_images, nrow, every_n_epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.render(trainer, pl_module, f"reconstructions_epoch_{trainer.current_epoch + 1:03d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.render(trainer, pl_module, "reconstructions")

    @rank_zero_only
    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> Path:
        images, _ = validation_images(trainer, self.num_images)
        with evaluating(pl_module):
            outputs = pl_module(images.to(pl_module.device)).float().cpu()
        rows = []
        for start in range(0, len(images), self.nrow):
            rows += [images[start:start + self.nrow], outputs[start:start + self.nrow]]
        path = save_grid(torch.cat(rows), self.dirpath / f"{name}.png", _output_range(pl_module), nrow=self.nrow)
        log_image_file(trainer, "reconstructions", path, trainer.global_step)
        return path


class CodingInterpolation(pl.Callback):
    """Decode straight lines between the codings of pairs of validation images (``interpolation.png``).

    Row ``i`` goes from validation image ``2i`` to image ``2i + 1`` in ``num_steps`` steps; the end
    columns are the two images' own reconstructions.
    """

    def __init__(self, dirpath: str, num_pairs: int = 8, num_steps: int = 10) -> None:
        if num_pairs < 1 or num_steps < 2:
            raise ValueError("callbacks.interpolation: num_pairs must be >= 1 and num_steps >= 2.")
        self.dirpath, self.num_pairs, self.num_steps = Path(dirpath), num_pairs, num_steps

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images, _ = validation_images(trainer, 2 * self.num_pairs)
        pairs = len(images) // 2
        with evaluating(pl_module):
            codings = pl_module.encode(images[: 2 * pairs].to(pl_module.device))
            start, end = codings[0::2], codings[1::2]
            weights = torch.linspace(0.0, 1.0, self.num_steps, device=codings.device)
            # (pairs, steps, *coding shape), row-major so each grid row is one pair.
            shape = (1, -1) + (1,) * (codings.dim() - 1)
            path_codings = torch.lerp(start.unsqueeze(1), end.unsqueeze(1), weights.view(shape))
            decoded = pl_module.network.decode(path_codings.flatten(0, 1)).float().cpu()
        path = save_grid(decoded, self.dirpath / "interpolation.png", _output_range(pl_module), nrow=self.num_steps)
        log_image_file(trainer, "interpolation", path, trainer.global_step)


class CodingsMap(pl.Callback):
    """A 2-D map of the validation codings coloured by label (``codings_tsne.png``), drawn at the end.

    Codings of more than two dimensions are embedded with scikit-learn's t-SNE.
    """

    def __init__(self, dirpath: str, num_points: int = 2000, seed: int = 0) -> None:
        if num_points < 10:
            raise ValueError(f"callbacks.codings_map.num_points must be >= 10, got {num_points}.")
        self.dirpath, self.num_points, self.seed = Path(dirpath), num_points, seed

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        images, labels = validation_images(trainer, self.num_points)
        with evaluating(pl_module):
            codings = torch.cat([pl_module.encode(c.to(pl_module.device)).float().cpu() for c in images.split(500)])
        self.draw(codings.flatten(1).numpy(), labels.numpy())

    def draw(self, codings: Any, labels: Any) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if codings.shape[1] > 2:
            from sklearn.manifold import TSNE

            perplexity = min(30.0, (len(codings) - 1) / 3)
            points = TSNE(2, init="pca", perplexity=perplexity, random_state=self.seed).fit_transform(codings)
            title = f"t-SNE of {codings.shape[1]}-D codings"
        else:
            points, title = codings, "2-D codings"
        fig, ax = plt.subplots(figsize=(6, 6))
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3)
        if labels.min() >= 0:
            ax.legend(*scatter.legend_elements(), title="label", loc="best", fontsize="small")
        ax.set_title(f"{title} ({len(points)} validation images)")
        ax.set_xticks([])
        ax.set_yticks([])
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / "codings_tsne.png"
        save_figure(fig, path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
