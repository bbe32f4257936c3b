"""Single config values: wrong types, sizes and ranges stop before any work with the key as typed;
Trainer flags users type work as plain overrides; the progress bar counts generator steps."""
from __future__ import annotations

import re

import pytest
import torch

from gan_modules.callbacks.progress import GeneratorStepProgressBar
from gan_modules.nets.autoencoders import VAE, ConvAutoencoder, StackedAutoencoder
from gan_modules.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_modules.nets.mlp import MLPDiscriminator, MLPGenerator
from gan_modules.nets.progan import ProGANDiscriminator, ProGANGenerator
from gan_modules.nets.stylegan import StyleGANGenerator
from gan_modules.training import train
from gan_modules.preflight import ConfigError, validate_config
from tests.conftest import CONF, FAST, ROOT, TINY_DIGITS, compose_train

TINY_MLP = ["model=mlp_small", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]",
            "model.generator.z_dim=8"]

# (overrides, the key the message must name as typed, a word of the fix)
BAD_VALUES = [
    (["model.generator.z_dim=0"], "model.generator.z_dim=0", ">= 1"),
    (["model.generator.z_dim=abc"], "model.generator.z_dim=abc", "integer"),
    (["model.n_critic=1.5"], "model.n_critic=1.5", "integer"),
    (["model.n_critic=2.0"], "model.n_critic=2.0", "model.n_critic=2"),
    (["model.n_critic=true"], "model.n_critic=true", "integer"),
    (["max_generator_steps=abc"], "max_generator_steps=abc", "integer"),
    (["max_generator_steps=0"], "max_generator_steps=0", ">= 1"),
    (["max_generator_steps=2.5"], "max_generator_steps=2.5", "integer"),
    (["seed=abc"], "seed=abc", "integer"),
    (["seed=1.5"], "seed=1.5", "integer"),
    (["dataset.batch_size=0"], "dataset.batch_size=0", ">= 1"),
    (["dataset.image_size=0"], "dataset.image_size=0", ">= 1"),
    (["dataset.num_workers=-1"], "dataset.num_workers=-1", ">= 0"),
    (["dataset.val_size=-1", "dataset=mnist"], "dataset.val_size=-1", ">= 0"),
    (["dataset.value_range=[1,0]"], "dataset.value_range=[1, 0]", "model.data_range"),
    (["trainer.max_epochs=-2"], "trainer.max_epochs=-2", ">= -1"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5", "integer"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0", ">= 1"),
    (["callbacks.samples.every_n_steps=0"], "callbacks.samples.every_n_steps=0", ">= 1"),
    (["model=mlp_small", "model.generator.hidden=[0]"], "model.generator.hidden=[0]", ">= 1"),
    (["model.discriminator.base_channels=0"], "model.discriminator.base_channels=0", ">= 1"),
    (["model.discriminator.minibatch_discrimination={num_kernels:0,kernel_dim:5}"],
     "model.discriminator.minibatch_discrimination.num_kernels=0", ">= 1"),
    (["model=cgan_dcgan", "model.generator.backbone.z_dim=0"], "model.generator.backbone.z_dim=0", ">= 1"),
    (["model=vae", "model.network.z_dim=0"], "model.network.z_dim=0", ">= 1"),
    (["model=conv_ae", "model.network.channels=[16,0]"], "model.network.channels=[16, 0]", ">= 1"),
    (["model.optimizer.g.lr=-1"], "model.optimizer.g.lr=-1", "> 0"),
    (["model.optimizer.d.lr=0"], "model.optimizer.d.lr=0", "> 0"),
    (["model.optimizer.d.lr=nan"], "model.optimizer.d.lr=nan", "finite"),
    (["model.optimizer.g.lr=abc"], "model.optimizer.g.lr=abc", "number"),
    (["model.optimizer.g.betas=[0.5,1.5]"], "model.optimizer.g.betas=[0.5, 1.5]", "[0, 1)"),
    (["+model.optimizer.d.weight_decay=-0.1"], "model.optimizer.d.weight_decay=-0.1", ">= 0"),
    (["optimizer=sgd", "model.optimizer.d.momentum=-0.5"], "model.optimizer.d.momentum=-0.5", ">= 0"),
    (["optimizer=rmsprop", "model.optimizer.g.eps=-1"], "model.optimizer.g.eps=-1", ">= 0"),
    (["model=stacked_ae", "model.optimizer.lr=0"], "model.optimizer.lr=0", "> 0"),
    (["model.scheduler.g={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:0}"],
     "model.scheduler.g.step_size=0", ">= 1"),
    (["model.scheduler_interval=batch"], "model.scheduler_interval=batch", "epoch"),
    (["model.ema_decay=1.5"], "model.ema_decay=1.5", "(0, 1)"),
    (["model.grad_clip_d=-1"], "model.grad_clip_d=-1", "> 0"),
    (["model.loss.gp_weight=-1"], "model.loss.gp_weight=-1", ">= 0"),
    (["model.loss.r1_weight=nan"], "model.loss.r1_weight=nan", "finite"),
    (["trainer.fast_dev_run=-1"], "trainer.fast_dev_run=-1", "debug=fdr"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5", "[0.0, 1.0]"),
    (["trainer.enable_progress_bar=false"], "trainer.enable_progress_bar=false", "callbacks.progress_bar=null"),
    (["dataset=image_folder", "dataset.root=null"], "dataset.root", "dataset.root=/path/to/images"),
]


@pytest.mark.parametrize("overrides, key, fix", BAD_VALUES, ids=[" ".join(c[0]) for c in BAD_VALUES])
def test_a_bad_value_is_a_config_error_naming_the_key(overrides, key, fix):
    cfg = compose_train(["dataset=digits", *overrides])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert key in str(info.value) and fix in str(info.value)


@pytest.mark.parametrize("overrides", [
    ["model.optimizer.g.lr=-1"], ["model.generator.z_dim=0"], ["max_generator_steps=abc"], ["dataset.batch_size=0"],
    ["dataset=image_folder", "dataset.root=null"],
])
def test_train_stops_before_loading_data_or_writing_the_run_folder(tmp_path, monkeypatch, overrides):
    import gan_modules.training as training

    def no_instantiate(*args, **kwargs):
        raise AssertionError("built something before the config was checked")

    monkeypatch.setattr(training, "instantiate", no_instantiate)
    with pytest.raises(ConfigError):
        train(compose_train(["dataset=digits", *overrides], tmp_path / "run"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_every_shipped_option_passes_the_value_checks():
    for group in ("model", "optimizer", "loss", "dataset", "trainer", "callbacks", "debug", "experiment"):
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            extra = ["dataset.root=/tmp/images"] if option == "image_folder" else []
            validate_config(compose_train([f"{group}={option}", *extra]))


@pytest.mark.parametrize("value", ["2", "1.0"])
def test_sizes_and_limits_that_are_fine_pass(value):
    validate_config(compose_train(["dataset=digits", f"trainer.limit_train_batches={value}",
                                   "model.n_critic=2", "seed=0", "max_generator_steps=3"]))


@pytest.mark.parametrize("build", [
    lambda v: MLPGenerator([1, 8, 8], z_dim=v),
    lambda v: MLPGenerator([1, 8, 8], hidden=[16, v]),
    lambda v: MLPDiscriminator([1, 8, 8], hidden=[v]),
    lambda v: DCGANGenerator([1, 16, 16], z_dim=v),
    lambda v: DCGANDiscriminator([1, 16, 16], base_channels=v),
    lambda v: DCGANDiscriminator([1, 16, 16], minibatch_discrimination={"num_kernels": v, "kernel_dim": 3}),
    lambda v: ProGANGenerator([1, 8, 8], z_dim=v),
    lambda v: ProGANDiscriminator([1, 8, 8], channel_base=v),
    lambda v: StyleGANGenerator([1, 8, 8], z_dim=8, w_dim=v, channel_base=64, max_channels=8),
    lambda v: StyleGANGenerator([1, 8, 8], z_dim=8, w_dim=8, mapping_layers=v, channel_base=64, max_channels=8),
    lambda v: StackedAutoencoder([1, 8, 8], hidden=[16, v]),
    lambda v: ConvAutoencoder([1, 8, 8], channels=[v]),
    lambda v: VAE([1, 8, 8], hidden=[16], z_dim=v),
])
def test_networks_refuse_sizes_that_are_not_positive_integers(build):
    build(4)  # a good size builds
    for bad in (0, 1.5, True, -3):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            build(bad)


@pytest.mark.parametrize("flag", ["fast_dev_run=true", "limit_train_batches=0.5", "limit_val_batches=0",
                                  "overfit_batches=2", "profiler=simple", "detect_anomaly=true",
                                  "num_sanity_val_steps=0", "val_check_interval=0.5", "check_val_every_n_epoch=2",
                                  "benchmark=true", "min_epochs=1", "max_time=00:00:10:00"])
@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp_cpu"])
def test_common_trainer_flags_are_plain_overrides(trainer, flag):
    cfg = compose_train([f"trainer={trainer}", f"trainer.{flag}"])  # no '+': they are listed
    key = flag.split("=")[0]
    assert key in cfg.trainer
    validate_config(cfg)


def test_the_listed_trainer_flags_carry_lightnings_defaults():
    import inspect

    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    defaults = {k: p.default for k, p in inspect.signature(pl.Trainer).parameters.items()}
    listed = OmegaConf.load(CONF / "trainer" / "default.yaml")
    for key in ("fast_dev_run", "limit_train_batches", "limit_val_batches", "overfit_batches", "profiler",
                "detect_anomaly", "num_sanity_val_steps", "val_check_interval", "check_val_every_n_epoch",
                "benchmark", "min_epochs", "max_time"):
        assert listed[key] == defaults[key], key


def test_fast_dev_run_trains_a_gan_end_to_end(tmp_path):
    cfg = compose_train([*FAST, *TINY_DIGITS, *TINY_MLP, "trainer.fast_dev_run=true", "model.n_critic=2"], tmp_path)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 1.0 and torch.isfinite(torch.tensor(metrics["g_loss"]))


def _bar_runs(monkeypatch) -> list[tuple[int, int]]:
    """Record the training bar's (n, total) at the end of every epoch."""
    seen: list[tuple[int, int]] = []
    original = GeneratorStepProgressBar.on_train_epoch_end

    def record(self, trainer, pl_module):
        seen.append((self.train_progress_bar.n, self.train_progress_bar.total))
        original(self, trainer, pl_module)

    monkeypatch.setattr(GeneratorStepProgressBar, "on_train_epoch_end", record)
    return seen


QUIET_BAR = ["trainer.accelerator=cpu", "trainer.enable_model_summary=false", "callbacks.progress_bar.refresh_rate=1"]


@pytest.mark.parametrize("n_critic", [1, 3])
def test_progress_bar_ends_at_the_number_of_generator_steps(tmp_path, monkeypatch, n_critic):
    seen = _bar_runs(monkeypatch)
    cfg = compose_train([*QUIET_BAR, *TINY_DIGITS, *TINY_MLP, "max_generator_steps=7", f"model.n_critic={n_critic}",
                         "callbacks.samples=null", "callbacks.training_plots=null"], tmp_path)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 7
    assert seen == [(7, 7)]


def test_progress_bar_counts_batches_across_epochs_and_for_autoencoders(tmp_path, monkeypatch):
    seen = _bar_runs(monkeypatch)
    # Epochs: Lightning's own total (batches per epoch) is already generator steps.
    train(compose_train([*QUIET_BAR, *TINY_DIGITS, *TINY_MLP, "model.n_critic=2", "trainer.max_epochs=2",
                         "trainer.limit_train_batches=3", "trainer.limit_val_batches=0", "callbacks.samples=null",
                         "callbacks.training_plots=null"], tmp_path / "epochs"))
    assert seen == [(3, 3), (3, 3)]
    seen.clear()
    # max_generator_steps past one epoch: the second epoch's total is what is left (digits: 89 batches of 16).
    train(compose_train([*QUIET_BAR, *TINY_DIGITS, *TINY_MLP, "max_generator_steps=95", "model.n_critic=2",
                         "callbacks.samples=null", "callbacks.training_plots=null", "trainer.limit_val_batches=0"],
                        tmp_path / "two"))
    assert seen[-1] == (95 - seen[0][1], 95 - seen[0][1]) and seen[0][0] == seen[0][1]
    seen.clear()
    # An autoencoder makes one optimizer step per batch.
    train(compose_train([*QUIET_BAR, *TINY_DIGITS, "model=stacked_ae", "model.network.hidden=[16,4]",
                         "max_generator_steps=5", "callbacks.codings_map=null", "callbacks.interpolation=null",
                         "callbacks.reconstructions=null", "callbacks.samples=null", "callbacks.training_plots=null",
                         "trainer.limit_val_batches=0"], tmp_path / "ae"))
    assert seen == [(5, 5)]


def test_the_default_callbacks_use_the_generator_step_bar():
    cfg = compose_train([])
    assert cfg.callbacks.progress_bar._target_ == "gan_modules.callbacks.progress.GeneratorStepProgressBar"


def test_lightning_floor_has_toggled_optimizer():
    import pytorch_lightning as pl

    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"pytorch-lightning>=([0-9.]+)', text).group(1)
    assert tuple(int(p) for p in floor.split(".")) >= (2, 5, 2)
    assert hasattr(pl.LightningModule, "toggled_optimizer")
