"""R1 penalty, the fake-batch hook with the replay buffer, TTUR, and every stabiliser option end to end."""
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gan_modules.callbacks.replay import ReplayBuffer
from gan_modules.gan import GANModule
from gan_modules.losses import r1_penalty
from gan_modules.objectives import GANLoss
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator
from gan_modules.training import train
from tests.conftest import FAST, TINY_DIGITS, compose_train

RUN = ["debug=default", *FAST, *TINY_DIGITS]
QUIET = ["callbacks.samples=null", "callbacks.training_plots=null"]  # pictures cost seconds per run


# --- R1 ----------------------------------------------------------------------------------------
class LinearCritic(nn.Module):
    """D(x) = w . flatten(x): its input gradient is w for every sample."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


def test_r1_of_a_linear_critic_is_the_squared_weight_norm_and_trains():
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    critic = LinearCritic(w.clone())
    real = torch.randn(5, 1, 2, 2)
    r1 = r1_penalty(critic, real)
    torch.testing.assert_close(r1, w.pow(2).sum())
    r1.backward()  # the graph of the input gradient is kept: d||w||^2 / dw = 2w
    torch.testing.assert_close(critic.w.grad, 2 * w)
    assert real.grad is None  # the real batch itself is not touched


def test_r1_runs_in_full_precision_under_autocast():
    torch.manual_seed(0)
    d = MLPDiscriminator((6,), hidden=[16])
    real = torch.randn(8, 6)
    critic = lambda x: d(x).logits  # noqa: E731
    reference = r1_penalty(critic, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert critic(real).dtype == torch.bfloat16  # the forward pass alone would be bf16
        mixed = r1_penalty(critic, real)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference)


def test_r1_weight_is_validated_and_shown():
    with pytest.raises(ValueError, match="r1_weight"):
        GANLoss(r1_weight=-1.0)
    assert "R1Penalty(weight=5, interval=1)" in repr(GANLoss("hinge", r1_weight=5))


# --- the module: R1 in the D phase, fake hooks -----------------------------------------------
def make_module(n_critic: int = 1, **loss_kwargs) -> GANModule:
    torch.manual_seed(0)
    return GANModule(
        generator=MLPGenerator((6,), z_dim=4, hidden=[16], output_activation="tanh"),
        discriminator=MLPDiscriminator((6,), hidden=[16]),
        loss=GANLoss("non_saturating", **loss_kwargs),
        optimizer={"g": partial(torch.optim.Adam, lr=1e-2), "d": partial(torch.optim.Adam, lr=1e-2)},
        n_critic=n_critic,
    )


def fit(module: GANModule, steps: int, callbacks: list | None = None) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.rand(64, 6) * 2 - 1, torch.zeros(64, dtype=torch.long)), batch_size=8)
    trainer = pl.Trainer(
        max_steps=steps * (module.n_critic + 1), accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks or [],
    )
    trainer.fit(module, train_dataloaders=data)
    return trainer


def test_r1_is_applied_and_logged_in_the_d_phase():
    module = make_module(r1_weight=5.0)
    trainer = fit(module, steps=2)
    assert "r1_penalty" in trainer.callback_metrics and float(trainer.callback_metrics["r1_penalty"]) > 0
    assert "r1_penalty" not in fit(make_module(), steps=1).callback_metrics


def test_fake_hooks_see_every_d_step_and_never_the_g_step():
    module = make_module(n_critic=3)
    seen: list[torch.Tensor] = []

    def hook(fake: torch.Tensor) -> torch.Tensor:
        assert not fake.requires_grad
        seen.append(fake)
        return torch.zeros_like(fake)  # D must then see what the hook returned

    module.fake_hooks.append(hook)
    d_forward = module.discriminator.forward
    inputs: list[torch.Tensor] = []
    module.discriminator.forward = lambda x: (inputs.append(x), d_forward(x))[1]
    fit(module, steps=2)
    assert len(seen) == 2 * 3
    # per D step: real then the hook's zeros; the G step's fakes come straight from G
    zero_batches = [x for x in inputs if not x.requires_grad and torch.count_nonzero(x) == 0]
    assert len(zero_batches) == 2 * 3


# --- replay buffer ---------------------------------------------------------------------------
def batch(step: int, size: int = 8) -> torch.Tensor:
    """A fake batch whose samples all carry their step number, so replayed ones can be told apart."""
    return torch.full((size, 1, 2, 2), float(step))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_replay_takes_exactly_round_fraction_of_the_batch_once_full(fraction):
    replay = ReplayBuffer(capacity=12, fraction=fraction, seed=0)
    for step in range(1, 30):
        out = replay.replace_fakes(batch(step))
        from_buffer = int((out.flatten(1)[:, 0] != step).sum())
        assert from_buffer == min(round(fraction * 8), (step - 1) * 8, 12)
        assert out.shape == (8, 1, 2, 2)
        assert replay.filled <= 12 and replay.buffer.shape[0] == 12  # never more than the capacity
    assert replay.filled == 12 and replay.offered == 29 * 8


def test_replay_draws_distinct_old_samples():
    replay = ReplayBuffer(capacity=100, fraction=1.0, seed=0)
    replay.push(torch.arange(100.0).view(100, 1))
    out = replay.replace_fakes(torch.full((10, 1), -1.0))
    assert out.unique().numel() == 10 and (out >= 0).all()


def test_replay_buffer_is_a_uniform_sample_of_everything_offered():
    # reservoir sampling: items offered early and late are equally likely to be kept
    kept = torch.zeros(400)
    for seed in range(50):
        replay = ReplayBuffer(capacity=40, seed=seed)
        for start in range(0, 400, 16):
            replay.push(torch.arange(start, min(start + 16, 400), dtype=torch.float32).view(-1, 1))
        kept[replay.buffer.view(-1).long()] += 1
    assert kept.sum() == 50 * 40
    first, last = kept[:200].sum(), kept[200:].sum()
    assert abs(float(first - last)) < 0.15 * float(kept.sum())  # FIFO would keep only the last 40


def test_replay_state_round_trip_continues_identically():
    replay = ReplayBuffer(capacity=10, fraction=0.5, seed=3)
    for step in range(4):
        replay.replace_fakes(batch(step))
    restored = ReplayBuffer(capacity=10, fraction=0.5, seed=99)  # the seed comes back from the state
    restored.load_state_dict(replay.state_dict())
    for step in range(4, 8):
        assert torch.equal(replay.replace_fakes(batch(step)), restored.replace_fakes(batch(step)))
    assert torch.equal(replay.buffer, restored.buffer) and replay.offered == restored.offered


def test_replay_restarts_when_the_sample_shape_changes():
    replay = ReplayBuffer(capacity=10, fraction=0.5)
    replay.replace_fakes(torch.zeros(4, 1, 2, 2))
    out = replay.replace_fakes(torch.ones(4, 1, 4, 4))  # e.g. progressive growing
    assert torch.equal(out, torch.ones(4, 1, 4, 4)) and replay.buffer.shape == (10, 1, 4, 4)


def test_replay_options_are_validated():
    with pytest.raises(ValueError, match="fraction"):
        ReplayBuffer(fraction=1.5)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=0)
    with pytest.raises(ValueError, match="storage must be 'device' or 'cpu'"):
        ReplayBuffer(storage="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replay_on_the_gpu_matches_replay_on_the_cpu():
    on_device, on_host = ReplayBuffer(capacity=20, seed=1), ReplayBuffer(capacity=20, seed=1, storage="cpu")
    for step in range(6):
        fakes = batch(step).cuda() + torch.randn(8, 1, 2, 2, device="cuda")
        assert torch.equal(on_device.replace_fakes(fakes), on_host.replace_fakes(fakes))
    assert on_device.buffer.is_cuda and not on_host.buffer.is_cuda
    assert torch.equal(on_device.state_dict()["buffer"], on_host.state_dict()["buffer"])


def test_replay_buffer_lives_on_the_fakes_device_and_checkpoints_on_the_cpu():
    # "meta" stands in for a GPU: a buffer on the fakes' device needs no device-to-host copy per D-step
    replay = ReplayBuffer(capacity=10, fraction=0.5, storage="device")
    replay.replace_fakes(torch.zeros(4, 1, 2, 2))
    state = replay.state_dict()
    assert state["buffer"].device.type == "cpu"
    restored = ReplayBuffer(capacity=10, fraction=0.5, storage="device")
    restored.load_state_dict(state)
    out = restored.replace_fakes(torch.zeros(4, 1, 2, 2, device="meta"))
    assert restored.buffer.device.type == "meta" and out.device.type == "meta" and restored.filled == 8


def test_replay_buffer_is_saved_in_and_restored_from_checkpoints(tmp_path, monkeypatch):
    instances: list[ReplayBuffer] = []
    snapshots: list[dict] = []
    setup = ReplayBuffer.setup

    def recording_setup(self, trainer, pl_module, stage):
        instances.append(self)
        setup(self, trainer, pl_module, stage)

    monkeypatch.setattr(ReplayBuffer, "setup", recording_setup)
    # state right after Lightning restored the callbacks, before any new batch
    monkeypatch.setattr(ReplayBuffer, "on_train_start", lambda self, *a: snapshots.append(self.state_dict()),
                        raising=False)
    replay = ["callbacks=replay", *QUIET, "callbacks.replay.capacity=40", "callbacks.replay.fraction=0.25"]
    train(compose_train([*RUN, *replay, "max_generator_steps=4"], tmp_path))
    saved = instances[0].state_dict()
    assert saved["filled"] == 40 and saved["offered"] == 4 * 16

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    in_file = torch.load(ckpt, weights_only=True)["callbacks"]["ReplayBuffer"]
    assert torch.equal(in_file["buffer"], saved["buffer"]) and torch.equal(in_file["rng_state"], saved["rng_state"])

    train(compose_train([*RUN, *replay, "max_generator_steps=5", f"ckpt_path={ckpt}"], tmp_path / "resumed"))
    restored = snapshots[1]
    assert torch.equal(restored["buffer"], saved["buffer"])
    assert (restored["filled"], restored["offered"]) == (saved["filled"], saved["offered"])
    assert torch.equal(restored["rng_state"], saved["rng_state"])
    assert instances[1].offered == 5 * 16  # and training went on with it


# --- configs ---------------------------------------------------------------------------------
def test_ttur_and_wgan_optimizers_compose_with_any_loss(tmp_path):
    cfg = compose_train(["optimizer=ttur", "loss=wgan_gp"], tmp_path)  # a later optimizer choice wins whole
    assert (cfg.model.optimizer.d.lr, cfg.model.optimizer.g.lr) == (4e-4, 1e-4)
    assert list(cfg.model.optimizer.d.betas) == list(cfg.model.optimizer.g.betas) == [0.0, 0.9]
    rms = compose_train(["loss=wgan_gp", "optimizer=rmsprop"], tmp_path).model.optimizer.d
    assert "betas" not in rms  # no Adam leftovers from the loss's own optimizer


MBD = "model.discriminator.minibatch_discrimination={num_kernels:8,kernel_dim:3}"


@pytest.mark.parametrize("overrides", [
    [MBD],
    ["model.discriminator.minibatch_stddev=true"],
    ["model.discriminator.spectral_norm=true", "model.discriminator.norm=none"],
    ["model=mlp_small", MBD, "model.discriminator.minibatch_stddev=true", "model.discriminator.spectral_norm=true"],
    ["model=dcgan_seed", "dataset.image_size=8", MBD, "model.discriminator.minibatch_stddev=true"],
    ["model.loss.r1_weight=5.0"],
    ["loss=wgan_gp", "model.loss.r1_weight=1.0", "model.discriminator.norm=layer", "max_generator_steps=2"],
    ["optimizer=ttur", "loss=hinge"],
    ["callbacks=replay", *QUIET, "callbacks.replay.fraction=0.5"],
    ["experiment=sn_hinge_ttur"],
], ids=["mbd", "stddev", "spectral_norm", "mlp_all", "seed_dcgan", "r1", "r1_wgan_gp", "ttur", "replay", "sn_hinge_ttur"])
def test_every_stabiliser_option_composes_and_trains(overrides, tmp_path):
    if not any(o.startswith("callbacks=") for o in overrides):
        overrides = [*QUIET, "callbacks.model_checkpoint=null", *overrides]
    metrics = train(compose_train([*RUN, "max_generator_steps=3", *overrides], tmp_path))
    assert metrics["generator_steps"] >= 2 and all(v == v for v in metrics.values())  # no NaN
    if any("r1_weight" in o for o in overrides):
        assert metrics["r1_penalty"] > 0
