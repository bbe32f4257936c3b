"""Loss and discriminator-accuracy curves over training, drawn as PNGs at the end of training."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from gan_modules.atomic_files import save_figure
from gan_modules.step_stats import DEFAULT_READ_EVERY_N_STEPS, PendingSteps
from gan_modules.steps import training_steps

PLOTS = {
    "losses": (("d_loss", "discriminator loss"), ("g_loss", "generator loss")),
    "d_accuracy": (("d_acc_real", "D accuracy on real"), ("d_acc_fake", "D accuracy on fake")),
    "d_outputs": (("d_real", "mean D(x)"), ("d_fake", "mean D(G(z))")),
    "autoencoder_losses": (("loss", "training loss"), ("reconstruction", "reconstruction loss (per pixel)")),
    "kl": (("kl", "KL(q(z|x) || N(0, I)) per sample"),),
}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` points; keeps the length of ``values``."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class TrainingPlots(pl.Callback):
    """Record the per-step statistics the module returns; plot them into ``dirpath`` at the end.

    The figures are read from the device in blocks of ``read_every_n_steps`` steps (and before each
    checkpoint and the drawing), not every step.
    """

    def __init__(self, dirpath: str, smoothing: int = 50, read_every_n_steps: int = DEFAULT_READ_EVERY_N_STEPS) -> None:
        if isinstance(read_every_n_steps, bool) or not isinstance(read_every_n_steps, int) or read_every_n_steps < 1:
            raise ValueError("callbacks.training_plots.read_every_n_steps must be a positive integer, "
                             f"got {read_every_n_steps!r}.")
        self.dirpath = Path(dirpath)
        self.smoothing = max(1, smoothing)
        self.history: dict[str, list[float]] = defaultdict(list)
        self.step_label = "generator step"
        self._pending = PendingSteps(read_every_n_steps)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any) -> None:
        self.step_label = "generator step" if hasattr(pl_module, "generator_steps") else "training step"
        if self._pending.add(outputs, training_steps(trainer, pl_module)):
            self._record_pending()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending.clear()  # nothing left over from an interrupted fit

    def _record_pending(self) -> None:
        records, _ = self._pending.take()
        for record in records:
            self.history["step"].append(float(record.step))
            for key, value in record.host().items():
                self.history[key].append(value)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record_pending()
        if trainer.is_global_zero:
            self.draw()

    def draw(self) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        written = []
        steps = self.history.get("step", [])
        for name, curves in PLOTS.items():
            present = [(k, label) for k, label in curves if len(self.history.get(k, [])) == len(steps) and steps]
            if not present:
                continue
            fig, ax = plt.subplots(figsize=(7, 4))
            for key, label in present:
                ax.plot(steps, self.history[key], alpha=0.25)
                ax.plot(steps, moving_average(self.history[key], self.smoothing), label=label,
                        color=ax.lines[-1].get_color())
            ax.set_xlabel(self.step_label)
            ax.legend()
            ax.grid(alpha=0.3)
            self.dirpath.mkdir(parents=True, exist_ok=True)
            path = self.dirpath / f"{name}.png"
            save_figure(fig, path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
        return written

    def state_dict(self) -> dict[str, Any]:
        self._record_pending()  # a checkpoint holds every step up to its own
        return {"history": dict(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = defaultdict(list, state_dict["history"])
