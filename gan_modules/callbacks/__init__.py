"""Lightning callbacks: sample grids, training plots, quality scores, the run config in checkpoints,
experience replay for D, progressive growing, NaN/collapse guards and autoencoder pictures.

The contract between the callbacks and the training module
-----------------------------------------------------------
Besides Lightning's own API (``device``, ``log_dict``, ``state_dict``, ...), the callbacks read and
write these attributes of the LightningModule. ``GANModule`` (``gan_modules/gan.py``) and
``AutoencoderModule`` (``gan_modules/autoencoder.py``) set them. Kinds: GAN, AE (every
autoencoder) and VAE (a variational autoencoder only). The tuples ``GAN_MODULE_ATTRIBUTES``,
``AUTOENCODER_MODULE_ATTRIBUTES`` and ``VAE_MODULE_ATTRIBUTES`` below list the same names, and
``tests/test_callback_contract.py`` checks built modules against them and them against this table.

==============================  ========  ====================================================================
attribute                       kinds     meaning; who sets it, who reads it
==============================  ========  ====================================================================
``sampling_generator``          GAN, AE   The network to draw samples from: the GAN's EMA copy when there is
                                          one, else its generator; a VAE's decoder; None for a plain
                                          autoencoder (nothing to sample). A property of the module. Read by
                                          SampleGrid and SampleQuality, which use its ``out_shape`` and
                                          ``output_range`` and do nothing when it is None.
``z_dim``                       GAN, VAE  Size of the noise / coding vector the sampling generator takes. A
                                          property. Read by SampleGrid and SampleQuality to draw fixed noise,
                                          only when ``sampling_generator`` is not None.
``num_classes``                 GAN       Class count of a conditional GAN, None when unconditional. Set in
                                          ``GANModule.__init__``. Read (with ``getattr``, so an autoencoder
                                          counts as unconditional) by SampleGrid and SampleQuality to cycle
                                          labels over the samples.
``generator_steps``             GAN       Generator steps done, a buffer (saved in checkpoints). The module
                                          adds 1 per batch; NonFiniteGuard puts it back after restoring
                                          weights so the skipped step still counts. Read through
                                          ``gan_modules.steps.training_steps`` by SampleGrid, SampleQuality,
                                          TrainingPlots, NonFiniteGuard and CollapseWatch (an autoencoder
                                          counts ``trainer.global_step`` instead).
``optimizer_steps_per_batch``   GAN, AE   Optimizer steps one batch makes (GAN: ``n_critic + 1``; AE: 1), set
                                          in ``__init__``. Read by ``gan_modules.steps`` (``trainer_length``,
                                          ``logs_this_batch``) and GeneratorStepProgressBar to turn Lightning's
                                          optimizer-step count into batches.
``fake_hooks``                  GAN       List of functions ``fake -> fake`` applied to every discriminator
                                          step's fake batch. The module applies them; ReplayBuffer adds its
                                          hook in ``setup`` and removes it in ``teardown``.
``end_epoch_early``             GAN       Flag: skip the next batch and end the epoch, so Lightning rebuilds
                                          the data loader. ProgressiveGrowing sets it when a stage brings a
                                          new batch size; the module's ``on_train_batch_start`` reads and
                                          clears it.
``generator``                   GAN       The trained generator. ProgressiveGrowing moves it (with the
                                          discriminator and the EMA copy) to the stage and alpha of the
                                          schedule, and reads its ``stage`` and ``alpha``.
``discriminator``               GAN       The trained discriminator; ProgressiveGrowing grows it with G.
``generator_ema``               GAN       The moving average of the generator, or None without
                                          ``model.ema_decay``; ProgressiveGrowing grows it with G when set.
``loss``                        GAN       The GAN objective. NonFiniteGuard and CollapseWatch read its
                                          ``kind`` (and ``gp_weight``, ``clip_value``) with ``getattr`` to
                                          word their advice and to skip g_loss checks for unbounded losses.
``network``                     AE        The autoencoder network. ReconstructionGrid, CodingInterpolation and
                                          CodingsMap read its ``output_range`` and call ``decode``.
``encode``                      AE        Method ``x -> codings`` (a VAE's posterior mean); read by the same
                                          three autoencoder callbacks.
==============================  ========  ====================================================================

Per-step figures reach the callbacks as the dict ``training_step`` returns (``outputs`` in
``on_train_batch_end``: ``d_loss``, ``g_loss``, ... as 0-d tensors on the training device), not
through ``self.log``, which logs only every ``trainer.log_every_n_steps`` batches (see
``gan_modules/steps.py``). Reading a value (``float(outputs["d_loss"])``) waits for the device; a
callback that needs every step keeps the records and reads them in blocks, as NonFiniteGuard,
CollapseWatch and TrainingPlots do (``gan_modules/step_stats.py``: ``PendingSteps``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from gan_modules.callbacks.plots import TrainingPlots
from gan_modules.callbacks.quality import SampleQuality
from gan_modules.callbacks.replay import ReplayBuffer
from gan_modules.callbacks.run_config import RunConfigInCheckpoint
from gan_modules.callbacks.samples import SampleGrid

# The contract's attributes by module kind; the table above describes each one.
GAN_MODULE_ATTRIBUTES = (
    "sampling_generator", "z_dim", "num_classes", "generator_steps", "optimizer_steps_per_batch", "fake_hooks",
    "end_epoch_early", "generator", "discriminator", "generator_ema", "loss",
)
AUTOENCODER_MODULE_ATTRIBUTES = ("sampling_generator", "optimizer_steps_per_batch", "network", "encode")
VAE_MODULE_ATTRIBUTES = AUTOENCODER_MODULE_ATTRIBUTES + ("z_dim",)


@runtime_checkable
class SamplingModule(Protocol):
    """What SampleGrid and SampleQuality need of a module that can be sampled: a GAN or a VAE.

    ``num_classes`` is optional (read with getattr). A plain autoencoder is no SamplingModule (it
    has no ``z_dim``): the callbacks find its ``sampling_generator`` None and do nothing.
    """

    @property
    def sampling_generator(self) -> nn.Module | None: ...

    @property
    def z_dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...


__all__ = ["SampleGrid", "SampleQuality", "TrainingPlots", "RunConfigInCheckpoint", "ReplayBuffer",
           "SamplingModule", "GAN_MODULE_ATTRIBUTES", "AUTOENCODER_MODULE_ATTRIBUTES", "VAE_MODULE_ATTRIBUTES"]
