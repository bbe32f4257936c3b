"""GANModule: the two-phase adversarial training loop as a LightningModule (manual optimisation).

One training step (= one batch = one *generator step*):

1. ``n_critic`` discriminator steps on the batch's real images and fresh fakes (real labelled 1,
   fake 0); only D's optimizer steps, and G runs under ``no_grad``.
2. One generator step with D frozen (``toggle_optimizer`` switches off D's gradients); only G's
   optimizer steps.

Training length: Lightning's ``trainer.global_step`` counts *optimizer* steps, so one iteration
adds ``n_critic + 1``. Ask for generator steps with the top-level ``max_generator_steps`` option of
``train.py`` (or epochs with ``trainer.max_epochs``); ``self.generator_steps`` counts them and is
saved in checkpoints.

Per-step statistics (losses, D's mean outputs and accuracies) go every step to the callbacks, as
``training_step``'s return value (a ``StepStatistics`` whose values stay on the device until read:
no step waits for the device), and to the loggers on Lightning's logging steps only
(``trainer.log_every_n_steps``, see ``steps.py``).

Conditional models (``nets/conditional.py``, ``model=cgan_*``) are trained as ``G(z, y)`` and
``D(x, y)`` on the batch's labels: every fake gets the label of the real image at the same batch
position. Fakes thus follow the data's class frequencies, D sees the same labels in its real and
its fake batch (label statistics tell it nothing), and a gradient penalty interpolates between a
real and a fake of the same class. An auxiliary classifier discriminator (AC-GAN, ``model=cgan_dcgan_acgan``)
adds its class cross-entropy to D's loss on real images (and fakes, if it says so) and to G's loss.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from datamodules.base import split_batch
from gan_modules.nets.conditional import call_generator, conditioning_classes
from gan_modules.objectives import GANLoss
from gan_modules.resume_settings import apply_to_trainer
from gan_modules.step_stats import StepStatistics
from gan_modules.steps import logs_this_batch

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
SCHEDULER_INTERVALS = ("epoch", "step")
FakeHook = Callable[[Tensor], Tensor]


class GANModule(pl.LightningModule):
    """Alternating D and G updates for any generator/discriminator pair and any ``GANLoss``.

    Args:
        generator: maps ``(B, z_dim)`` noise to samples; must have ``z_dim`` and ``out_shape``.
        discriminator: maps samples to one logit per sample.
        loss: the adversarial objective and its regularisers (``objectives.GANLoss``).
        optimizer: partially applied optimizers (called with the parameters), ``{"g": ..., "d": ...}``.
        scheduler: optional partially applied LR schedulers, ``{"g": ..., "d": ...}`` (either may be
            None), stepped as ``scheduler_interval`` says.
        scheduler_interval: ``"epoch"``: the schedulers step once per epoch; ``"step"``: after every
            generator step, so their lengths (``T_max``, ``step_size``) count generator steps and a
            schedule keeps its shape when the batch or data size changes.
        n_critic: discriminator steps per generator step (>= 1).
        grad_clip_g, grad_clip_d: clip each network's gradient norm to this value (None: off).
        ema_decay: keep an exponential moving average of G's weights with this decay (e.g. 0.999),
            updated after every generator step; sampling, grids and evaluation then use it.
        data_range: the range ``[lo, hi]`` the generator's samples (and so the data) live in; None
            for unbounded data. The datasets are scaled to it (``dataset.value_range``).
        compile: ``torch.compile`` G and D (in place: parameter names, and so checkpoints, stay the
            same). Not with the penalties that differentiate twice (GP, R1, path length): compiled
            graphs have no double backward (preflight refuses that config).
        channels_last: hold G's and D's image weights and the real batches in channels-last memory
            order, which GPU convolutions (tensor cores) run faster in.

    In a config all of this is one node, ``model`` (conf/model/*.yaml with conf/system/gan.yaml).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        optimizer: Mapping[str, OptimizerFactory],
        scheduler: Mapping[str, SchedulerFactory | None] | None = None,
        scheduler_interval: str = "epoch",
        n_critic: int = 1,
        grad_clip_g: float | None = None,
        grad_clip_d: float | None = None,
        ema_decay: float | None = None,
        data_range: Sequence[float] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if int(n_critic) < 1:
            raise ValueError(f"model.n_critic must be >= 1 (discriminator steps per generator step), got {n_critic}.")
        for name, clip in (("grad_clip_g", grad_clip_g), ("grad_clip_d", grad_clip_d)):
            if clip is not None and clip <= 0:
                raise ValueError(f"model.{name} must be positive or null, got {clip}.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in (0, 1) or null, got {ema_decay}.")
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"model.scheduler_interval must be one of {', '.join(SCHEDULER_INTERVALS)}, got "
                             f"{scheduler_interval!r}.")
        scheduler = scheduler or {}
        for name, given in (("model.optimizer", optimizer), ("model.scheduler", scheduler)):
            unknown = set(given) - {"g", "d"}
            if unknown or (name == "model.optimizer" and set(given) != {"g", "d"}):
                raise ValueError(f"{name} takes one entry per network, g and d; got {sorted(given)}.")
        if compile and loss.differentiates_twice:
            raise ValueError("model.compile=true cannot train with a penalty that differentiates twice (gradient "
                             "penalty, R1 or path length): torch.compile has no double backward. Set those weights "
                             "to 0, or model.compile=false.")
        self.automatic_optimization = False
        self.compile_networks, self.channels_last = bool(compile), bool(channels_last)
        self.generator = generator
        self.discriminator = discriminator
        # The class count of a conditional pair; None (unconditional) keeps labels out of every call.
        self.num_classes = conditioning_classes(generator, discriminator)
        self.loss = loss
        self.optimizer_g, self.optimizer_d = optimizer["g"], optimizer["d"]
        self.scheduler_g, self.scheduler_d = scheduler.get("g"), scheduler.get("d")
        self.scheduler_interval = scheduler_interval
        self.data_range = None if data_range is None else tuple(float(v) for v in data_range)
        self.n_critic = int(n_critic)
        # Lightning's global_step counts optimizer steps: one generator step makes this many.
        self.optimizer_steps_per_batch = self.n_critic + 1
        self.grad_clip_g, self.grad_clip_d = grad_clip_g, grad_clip_d
        # A buffer, so that it is saved in (and restored from) every checkpoint.
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        # The same count as a Python int, for the lazy terms' schedule; read from the buffer when
        # training starts (a resumed run restores the buffer).
        self._steps_done: int | None = None
        self.ema_decay = ema_decay
        # A submodule, so that it is checkpointed and moved between devices with the rest.
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema_decay else None
        # Functions ``fake -> fake`` applied in order to every D-step's (detached) fake batch before
        # D sees it; callbacks register theirs in ``setup`` (the replay buffer swaps in old fakes).
        # The generator step never goes through them.
        self.fake_hooks: list[FakeHook] = []
        # Set by a callback that needs a new data loader now (progressive growing at a new batch
        # size): the next batch is skipped and the epoch ends, so Lightning rebuilds the loader.
        self.end_epoch_early = False

    def configure_model(self) -> None:
        """Memory order and compilation, once per run, after Lightning set the module up (also on resume)."""
        if self.channels_last:
            for net in (self.generator, self.discriminator, self.generator_ema):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        if self.compile_networks and not getattr(self, "_compiled", False):
            self.generator.compile()
            self.discriminator.compile()
            self._compiled = True

    @property
    def generator_steps_done(self) -> int:
        """``generator_steps`` as a Python int: the buffer is read from the device once per run, then
        counted on the host, so the callbacks that ask for the step every step cost no device sync."""
        if self._steps_done is None:
            self._steps_done = int(self.generator_steps)
        return self._steps_done

    @property
    def z_dim(self) -> int:
        return int(self.generator.z_dim)

    def sample_z(self, n: int) -> Tensor:
        return torch.randn(n, self.z_dim, device=self.device)

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator to sample from: the EMA copy when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Inference only: samples from noise (and labels, for a conditional model)."""
        return call_generator(self.sampling_generator, z, labels)

    @torch.no_grad()
    def update_ema(self) -> None:
        # Ramp the decay up over the first steps so the average forgets the random initialisation.
        steps = float(self.generator_steps_done)
        decay = min(self.ema_decay, (1.0 + steps) / (10.0 + steps))
        torch._foreach_lerp_(list(self.generator_ema.parameters()), list(self.generator.parameters()), 1.0 - decay)
        for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema.copy_(live)  # BatchNorm statistics are taken as they are

    # --- training ---------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.end_epoch_early:
            self.end_epoch_early = False
            return -1  # Lightning's signal to end the epoch here
        return None

    def training_step(self, batch: Any, batch_idx: int) -> StepStatistics:
        real, labels = split_batch(batch)
        if self.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        labels = labels if self.num_classes is not None else None  # fakes share the real labels
        step = self.generator_steps_done
        opt_g, opt_d = self.optimizers()
        stats = self._discriminator_phase(real, opt_d, labels, step)
        stats.update(self._generator_phase(real.shape[0], opt_g, labels, step))
        self.generator_steps += 1
        self._steps_done = step + 1
        if self.generator_ema is not None:
            self.update_ema()
        if self.scheduler_interval == "step":
            self._step_schedulers()
        # The figures stay on the device: the callbacks read them in blocks (gan_modules/step_stats.py),
        # so a step makes no host sync.
        return StepStatistics(stats, step=step + 1)

    def on_train_batch_end(self, outputs: StepStatistics, batch: Any, batch_idx: int) -> None:
        # Logged here, after the callbacks' hooks, so that a callback ending the run in its own
        # on_train_batch_end (trainer.should_stop) still gets the last step's figures logged.
        if logs_this_batch(self.trainer):
            values = StepStatistics.of(outputs, self.generator_steps_done).host()  # the step's one device read
            self.log_dict({k: values[k] for k in ("d_loss", "g_loss")}, prog_bar=True, on_step=True, on_epoch=False)
            self.log_dict({k: v for k, v in values.items() if k not in ("d_loss", "g_loss")}, on_step=True,
                          on_epoch=False)

    def on_train_start(self) -> None:
        # After Lightning restored a checkpoint's optimizers: the config given now is what runs.
        apply_to_trainer(self.trainer, {"model.optimizer.g": self.optimizer_g, "model.optimizer.d": self.optimizer_d})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["loss_term_statistics"] = self.loss.latest_statistics()
        # What the schedulers' saved counts count: a resume under the other interval is refused.
        checkpoint["scheduler_interval"] = self.scheduler_interval
        # Lightning skips the callbacks' on_save_checkpoint for a weights-only checkpoint, but not
        # this hook: the NaN guard looks at the steps it has not read yet here too.
        weights_only = "optimizer_states" not in checkpoint
        if weights_only and self._trainer is not None:
            for callback in self.trainer.callbacks:
                before_save = getattr(callback, "before_checkpoint", None)
                if callable(before_save):
                    before_save(self.trainer, self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Let a resumed run switch the EMA on or off (``model.ema_decay``) instead of failing to load."""
        self._steps_done = None
        self.loss.restore_statistics(checkpoint.get("loss_term_statistics", {}))
        state = checkpoint["state_dict"]
        has_ema = any(k.startswith("generator_ema.") for k in state)
        if self.generator_ema is not None and not has_ema:
            # Start the average from the generator's weights, as a fresh run does.
            for key in [k for k in state if k.startswith("generator.")]:
                state["generator_ema." + key[len("generator."):]] = state[key].clone()
            log.info("The checkpoint has no EMA generator: model.ema_decay starts one from its generator's weights.")
        elif self.generator_ema is None and has_ema:
            for key in [k for k in state if k.startswith("generator_ema.")]:
                del state[key]
            log.info("model.ema_decay is null: the checkpoint's EMA generator is dropped.")
        # The loss's state (e.g. an adaptive augmentation's probability) follows the config: what the
        # checkpoint lacks starts fresh, what this loss does not have is dropped.
        current = {k: v for k, v in self.state_dict().items() if k.startswith("loss.")}
        for key in [k for k in state if k.startswith("loss.") and k not in current]:
            del state[key]
        for key in current.keys() - state.keys():
            state[key] = current[key].clone()
            log.info("The checkpoint has no %s: it starts from its initial value.", key)

    def on_fit_start(self) -> None:
        if self.fake_hooks and self.loss.classify_fakes:
            raise ValueError(
                "The discriminator's class head is trained on fakes (model.loss.classify_fakes=true), but a callback "
                "(the replay buffer) swaps in old fakes, whose classes differ from this step's labels: set "
                "model.loss.classify_fakes=false or callbacks.replay=null."
            )

    def _discriminator_phase(self, real: Tensor, opt_d: Any, labels: Tensor | None, step: int) -> dict[str, Tensor]:
        with self.toggled_optimizer(opt_d):
            for critic_step in range(self.n_critic):
                fake = self._fakes_for_discriminator(real.shape[0], labels)
                total, stats = self.loss.discriminator_objective(
                    self.discriminator, real, fake, labels, step=step * self.n_critic + critic_step)
                self._optimize(opt_d, total, self.grad_clip_d)
                if self.loss.clip_value is not None:  # the original WGAN's constraint on D's weights
                    with torch.no_grad():
                        for p in self.discriminator.parameters():
                            p.clamp_(-self.loss.clip_value, self.loss.clip_value)
        return stats

    def _generator_phase(self, batch_size: int, opt_g: Any, labels: Tensor | None, step: int) -> dict[str, Tensor]:
        with self.toggled_optimizer(opt_g):  # D's parameters stop requiring grad here
            total, stats = self.loss.generator_objective(
                self.generator, self.discriminator, self.sample_z(batch_size), labels, step=step)
            self._optimize(opt_g, total, self.grad_clip_g)
        return stats

    @torch.no_grad()
    def _fakes_for_discriminator(self, batch_size: int, labels: Tensor | None) -> Tensor:
        fake = call_generator(self.generator, self.sample_z(batch_size), labels)
        # Replayed fakes (callbacks.replay) keep this step's labels: a fake paired with another
        # class is still a fake, so D is right to reject it.
        for hook in self.fake_hooks:
            fake = hook(fake)
        return fake

    def _optimize(self, optimizer: Any, loss: Tensor, clip: float | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        if self.scheduler_interval == "epoch":
            self._step_schedulers()

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def configure_optimizers(self) -> Any:
        opt_g = self.optimizer_g(params=self.generator.parameters())
        opt_d = self.optimizer_d(params=self.discriminator.parameters())
        schedulers = [
            factory(optimizer=opt)
            for factory, opt in ((self.scheduler_g, opt_g), (self.scheduler_d, opt_d))
            if factory is not None
        ]
        return ([opt_g, opt_d], schedulers) if schedulers else [opt_g, opt_d]
