"""AutoencoderModule: autoencoders trained in the same framework (automatic optimisation).

One training step reconstructs a batch: per-pixel binary cross-entropy (or MSE) between the input
and the network's output; the VAE adds the KL divergence of its Gaussian codings from N(0, I).
Greedy layer-wise training (``layerwise_epochs``) trains a stacked autoencoder one shallow
autoencoder at a time, then fine-tunes the whole stack.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.base import split_batch
from gan_modules.nets.autoencoders import VAE, StackedAutoencoder
from gan_modules.nets.common import eval_mode
from gan_modules.resume_settings import apply_to_trainer
from gan_modules.steps import logs_this_batch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
RECONSTRUCTIONS = ("bce", "mse")


def reconstruction_loss(reconstruction: Tensor, target: Tensor, kind: str) -> Tensor:
    """Mean per-pixel loss: ``bce`` treats each pixel as a label in [0, 1] (multi-label BCE)."""
    if kind == "mse":
        return F.mse_loss(reconstruction, target)
    # BCE on probabilities is refused under autocast: compute it in fp32 outside autocast.
    with torch.autocast(device_type=reconstruction.device.type, enabled=False):
        return F.binary_cross_entropy(reconstruction.float(), target.float())


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per sample, summed over the coding dimensions."""
    return 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum(dim=1)


class AutoencoderModule(pl.LightningModule):
    """Reconstruction training for any autoencoder network in ``gan_modules.nets.autoencoders``.

    Args:
        network: the autoencoder; a ``VAE`` is trained on the negative ELBO.
        optimizer: partially applied optimizer (called with the parameters).
        reconstruction: ``bce`` (data in [0, 1], sigmoid output) or ``mse``.
        kl_weight: weight of the VAE's KL term (1.0 is the ELBO; the total is divided by the
            number of pixels, so that it is on the scale of the per-pixel reconstruction loss).
        layerwise_epochs: greedy layer-wise training of a ``StackedAutoencoder``: train each
            shallow autoencoder (outermost first) for this many epochs, each on the codings of the
            frozen layers before it, then train the whole stack for the remaining epochs.
        data_range: the range ``[lo, hi]`` of the data the network reconstructs (None: unbounded).

    In a config all of this is one node, ``model`` (conf/model/*_ae.yaml with conf/system/autoencoder.yaml).
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerFactory,
        reconstruction: str = "bce",
        kl_weight: float = 1.0,
        layerwise_epochs: int | None = None,
        data_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"model.reconstruction={reconstruction!r}: choose one of {list(RECONSTRUCTIONS)}.")
        if kl_weight < 0:
            raise ValueError(f"model.kl_weight must be >= 0, got {kl_weight}.")
        if layerwise_epochs is not None:
            if not isinstance(network, StackedAutoencoder):
                raise ValueError(
                    "model.layerwise_epochs (greedy layer-wise training) needs a stacked autoencoder "
                    f"(model=stacked_ae), not {type(network).__name__}; set it to null for this model."
                )
            if int(layerwise_epochs) < 1:
                raise ValueError(f"model.layerwise_epochs must be >= 1 or null, got {layerwise_epochs}.")
        self.network = network
        # Lightning counts optimizer steps; training length in batches is this many of them per batch.
        self.optimizer_steps_per_batch = 1
        self.optimizer = optimizer
        self.reconstruction = reconstruction
        self.kl_weight = float(kl_weight)
        self.layerwise_epochs = None if layerwise_epochs is None else int(layerwise_epochs)
        self.data_range = None if data_range is None else tuple(float(v) for v in data_range)

    @property
    def is_variational(self) -> bool:
        return isinstance(self.network, VAE)

    # The sampling interface the GAN callbacks use (sample grids, quality scores): only a VAE has one.
    @property
    def sampling_generator(self) -> nn.Module | None:
        return self.network.decoder if self.is_variational else None

    @property
    def z_dim(self) -> int:
        return int(self.network.z_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Inference only: the reconstruction of ``x``."""
        out = self.network(x)
        return out[0] if isinstance(out, tuple) else out

    def encode(self, x: Tensor) -> Tensor:
        """The codings of ``x`` (a VAE's posterior mean)."""
        return self.network.encoder(x)

    # --- training ---------------------------------------------------------------------------
    def layerwise_stage(self) -> int | None:
        """Which shallow autoencoder trains now (0 = outermost); ``num_layers`` = the whole stack."""
        if self.layerwise_epochs is None:
            return None
        return min(self.current_epoch // self.layerwise_epochs, self.network.num_layers)

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        stage = self.layerwise_stage()
        if stage is not None and stage < self.network.num_layers:
            return {"loss": self._shallow_loss(x, stage), "stage": torch.tensor(float(stage))}
        out = self.network(x)
        if not self.is_variational:
            loss = reconstruction_loss(out, x, self.reconstruction)
            return {"loss": loss, "reconstruction": loss.detach()}
        reconstruction, mean, log_var = out
        rec = reconstruction_loss(reconstruction, x, self.reconstruction)
        kl = gaussian_kl(mean.float(), log_var.float()).mean()
        loss = rec + self.kl_weight * kl / x[0].numel()
        return {"loss": loss, "reconstruction": rec.detach(), "kl": kl.detach()}

    def _shallow_loss(self, x: Tensor, stage: int) -> Tensor:
        """Loss of the shallow autoencoder ``stage`` on the codings of the (frozen) layers before it."""
        net: StackedAutoencoder = self.network
        with torch.no_grad():
            h = net.corrupt(x).flatten(1)
            for i in range(stage):
                h = net.encoder.layer(i, h)
        out = net.decode_layer(stage, net.encoder.layer(stage, h))
        if stage == 0:
            return reconstruction_loss(out.view_as(x), x, self.reconstruction)
        return F.mse_loss(out, h)  # inner codings are unbounded: squared error

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, _ = split_batch(batch)
        losses = self.losses(x)
        if logs_this_batch(self.trainer, optimizer_steps_pending=1):
            self.log_dict(losses, prog_bar=True, on_step=True, on_epoch=False)
        return losses

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = split_batch(batch)
        out = self.network(x)  # eval mode: no input corruption, the VAE decodes its mean
        reconstruction = out[0] if isinstance(out, tuple) else out
        self.log("val/reconstruction", reconstruction_loss(reconstruction, x, self.reconstruction),
                 on_epoch=True, prog_bar=True, batch_size=x.shape[0])

    def on_train_start(self) -> None:
        # After Lightning restored a checkpoint's optimizer: the config given now is what runs.
        apply_to_trainer(self.trainer, {"model.optimizer": self.optimizer})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(params=self.network.parameters())


def validate_autoencoder_setup(module: AutoencoderModule, datamodule: Any) -> None:
    """Raise a clear error when the autoencoder cannot reconstruct this data; runs in milliseconds."""
    network = module.network
    data_shape = tuple(datamodule.sample_shape)
    with eval_mode(network), torch.no_grad():
        out = module(torch.rand(2, *data_shape))
    if tuple(out.shape[1:]) != data_shape:
        raise ValueError(
            f"The autoencoder reconstructs shape {list(out.shape[1:])} but the dataset gives {list(data_shape)}: "
            "the model configs read the shape from dataset.shape; if you set model.network.in_shape yourself, "
            "make it match."
        )
    data_range = None if datamodule.value_range is None else tuple(float(v) for v in datamodule.value_range)
    if module.reconstruction == "bce" and data_range != (0.0, 1.0):
        raise ValueError(
            f"model.reconstruction=bce needs data in [0, 1] (pixels as probabilities), but the data "
            f"are scaled to {data_range}. Set model.data_range=[0.0,1.0] with a sigmoid output, or use "
            "model.reconstruction=mse."
        )
    out_range = None if network.output_range is None else tuple(network.output_range)
    if out_range is not None and out_range != data_range:
        raise ValueError(
            f"The autoencoder's output range is {list(out_range)} but the data are scaled to {data_range}: "
            "make model.data_range match model.network.output_activation (sigmoid -> [0, 1], tanh -> [-1, 1])."
        )
