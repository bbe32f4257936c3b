"""The two-phase loop: each phase changes only its own network; counts; WGAN clipping."""
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from gan_modules.gan import GANModule
from gan_modules.objectives import GANLoss
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator


def make_module(kind="non_saturating", n_critic=1, **loss_kwargs) -> GANModule:
    torch.manual_seed(0)
    return GANModule(
        generator=MLPGenerator((6,), z_dim=4, hidden=[16], batch_norm=True, output_activation="tanh"),
        discriminator=MLPDiscriminator((6,), hidden=[16]),
        loss=GANLoss(kind, **loss_kwargs),
        optimizer={"g": partial(torch.optim.Adam, lr=1e-2), "d": partial(torch.optim.Adam, lr=1e-2)},
        n_critic=n_critic,
    )


def fit(module: GANModule, steps: int) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.rand(64, 6) * 2 - 1, torch.zeros(64, dtype=torch.long)), batch_size=8)
    trainer = pl.Trainer(
        max_steps=steps * (module.n_critic + 1), accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=data)
    return trainer


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def changed(before: list[torch.Tensor], net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("kind", ["non_saturating", "wasserstein"])
def test_d_phase_changes_only_d_and_g_phase_only_g(kind):
    module = make_module(kind)
    log = []
    d_phase, g_phase = module._discriminator_phase, module._generator_phase

    def spy_d(*args):
        g0, d0 = params(module.generator), params(module.discriminator)
        out = d_phase(*args)
        log.append(("D phase", changed(g0, module.generator), changed(d0, module.discriminator)))
        return out

    def spy_g(*args):
        g0, d0 = params(module.generator), params(module.discriminator)
        out = g_phase(*args)
        log.append(("G phase", changed(g0, module.generator), changed(d0, module.discriminator)))
        # D must be trainable again after the G phase (toggling restored requires_grad)
        assert all(p.requires_grad for p in module.discriminator.parameters())
        return out

    module._discriminator_phase, module._generator_phase = spy_d, spy_g
    fit(module, steps=3)
    assert log == [("D phase", False, True), ("G phase", True, False)] * 3


def test_exact_generator_steps_and_optimizer_step_count():
    module = make_module(n_critic=3)
    trainer = fit(module, steps=4)
    assert int(module.generator_steps) == 4
    assert trainer.global_step == 4 * (3 + 1)  # Lightning counts every optimizer step
    opt_g, opt_d = trainer.optimizers
    assert opt_g.state[next(iter(module.generator.parameters()))]["step"] == 4
    assert opt_d.state[next(iter(module.discriminator.parameters()))]["step"] == 12


def test_wgan_weight_clipping_bounds_hold_after_steps():
    module = make_module("wasserstein", n_critic=2, clip_value=0.01)
    fit(module, steps=3)
    bound = max(p.abs().max().item() for p in module.discriminator.parameters())
    assert bound <= 0.01 + 1e-7
    unclipped = make_module("wasserstein", n_critic=2)
    fit(unclipped, steps=3)
    assert max(p.abs().max().item() for p in unclipped.discriminator.parameters()) > 0.01


def test_gradient_penalty_is_logged_and_n_critic_validated():
    module = make_module("wasserstein", n_critic=1, gp_weight=10.0)
    trainer = fit(module, steps=2)
    assert "gradient_penalty" in trainer.callback_metrics
    with pytest.raises(ValueError, match="n_critic"):
        make_module(n_critic=0)


def test_gradient_clipping_caps_the_update():
    module = make_module()
    module.grad_clip_d = module.grad_clip_g = 1e-3
    norms = []
    step = torch.optim.Adam.step

    def spy(opt, *a, **k):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.norm(torch.stack([g.norm() for g in grads])).item())
        return step(opt, *a, **k)

    torch.optim.Adam.step = spy
    try:
        fit(module, steps=2)
    finally:
        torch.optim.Adam.step = step
    assert norms and max(norms) <= 1e-3 * 1.0001


# 2 epochs of 2 batches: 2 scheduler steps once an epoch, 4 once per generator step (D steps do not count)
@pytest.mark.parametrize("interval, scheduler_steps", [("epoch", 2), ("step", 4)])
def test_per_network_lr_schedulers_step_at_their_interval(interval, scheduler_steps):
    module = make_module(n_critic=2)
    module.scheduler_interval = interval
    module.scheduler_g = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    data = DataLoader(TensorDataset(torch.rand(16, 6), torch.zeros(16, dtype=torch.long)), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=data)
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** scheduler_steps)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(1e-2)  # no scheduler for D


def test_statistics_are_logged_on_lightning_logging_steps_and_the_last_one():
    # Lightning writes on_step values only every log_every_n_steps; logging the rest costs time for nothing.
    module = make_module(n_critic=2)
    logged_at, returned = [], []
    log_dict = module.log_dict

    def spy(metrics, **kwargs):
        if "d_loss" in metrics:
            logged_at.append(int(module.generator_steps))
        return log_dict(metrics, **kwargs)

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, *args):
            returned.append(outputs)

    module.log_dict = spy
    data = DataLoader(TensorDataset(torch.rand(80, 6) * 2 - 1), batch_size=8)  # 10 batches: no epoch end
    trainer = pl.Trainer(max_steps=7 * 3, log_every_n_steps=3, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Record()])
    trainer.fit(module, train_dataloaders=data)
    assert logged_at == [3, 6, 7]  # the logging steps, then the run's last
    # Every step's figures reach the callbacks as 0-d tensors, still unread unless a logging step read them.
    assert len(returned) == 7 and all(torch.is_tensor(v) and v.shape == () for out in returned for v in out.values())
    assert [out.is_read for out in returned] == [False, False, True, False, False, True, True]
    assert float(trainer.callback_metrics["d_loss"]) == pytest.approx(float(returned[-1]["d_loss"]))
    assert set(returned[-1]) >= {"d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake"}
