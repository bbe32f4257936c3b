"""Every option of every config group composes and instantiates; bad options fail clearly."""
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gan_modules.build import build_module, is_autoencoder, validate_setup
from gan_modules.training import finish_loggers, instantiate_all
from tests.conftest import CONF, TINY_DIGITS, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def dataset_for(model: str) -> list[str]:
    return ["dataset=toy2d_ring"] if model == "mlp_toy" else TINY_DIGITS


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_and_fits_its_data(model, tmp_path):
    cfg = compose_train([f"model={model}", *dataset_for(model)], tmp_path)
    module = build_module(cfg)
    validate_setup(module, instantiate(cfg.dataset))
    if is_autoencoder(cfg):  # one optimizer over the whole autoencoder
        optimizer = module.configure_optimizers()
        assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in module.network.parameters()}
        return
    opt_g, opt_d = module.configure_optimizers()
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in module.generator.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in module.discriminator.parameters()}


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_instantiates(loss, tmp_path):
    cfg = compose_train([f"loss={loss}", *TINY_DIGITS], tmp_path)
    assert type(instantiate(cfg.model.loss)).__name__ == "GANLoss"


def test_wgan_experiments_bring_their_paper_settings(tmp_path):
    wgan = compose_train(["experiment=wgan"], tmp_path)
    assert wgan.model.loss.clip_value == 0.01 and wgan.model.n_critic == 5
    assert wgan.model.optimizer.d._target_ == "torch.optim.RMSprop" and wgan.model.optimizer.d.lr == 5e-5
    gp = compose_train(["experiment=wgan_gp"], tmp_path)
    assert gp.model.loss.gp_weight == 10 and gp.model.n_critic == 5 and list(gp.model.optimizer.g.betas) == [0.0, 0.9]
    # a later command-line choice still wins
    assert compose_train(["experiment=wgan", "model.n_critic=2"], tmp_path).model.n_critic == 2


@pytest.mark.parametrize("loss", options("loss"))
def test_a_loss_file_selects_a_loss_and_nothing_else(loss, tmp_path):
    default, chosen = compose_train([], tmp_path), compose_train([f"loss={loss}"], tmp_path)
    def without_loss(cfg):
        return {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "loss"}

    assert without_loss(chosen) == without_loss(default)  # optimizer, n_critic, schedulers: untouched
    assert set(chosen.model.loss) == set(default.model.loss)  # no new keys: the regularisers are shared


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_instantiates_for_both_networks(optimizer, tmp_path):
    cfg = compose_train([f"optimizer={optimizer}", *TINY_DIGITS], tmp_path)
    opt_g, opt_d = build_module(cfg).configure_optimizers()
    assert type(opt_g).__name__ == type(opt_d).__name__ == instantiate(cfg.model.optimizer.g).func.__name__


def test_rmsprop_uses_keras_defaults(tmp_path):
    opt = compose_train(["optimizer=rmsprop"], tmp_path).model.optimizer.d
    assert (opt.lr, opt.alpha, opt.eps) == (1e-3, 0.9, 1e-7)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config(trainer, tmp_path):
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(Exception, match="(?i)gpu|cuda"):
            instantiate(cfg.trainer)
    else:
        assert instantiate(cfg.trainer).max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_config(callbacks, tmp_path):
    cfg = compose_train([f"callbacks={callbacks}"], tmp_path)
    made = instantiate_all(cfg.callbacks)
    assert len(made) == len([v for v in cfg.callbacks.values() if v is not None])


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_config(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train([f"logger={logger}"], tmp_path)
    loggers = instantiate_all(cfg.logger)
    assert len(loggers) == len(cfg.logger) >= 1
    for lg in loggers:
        lg.log_metrics({"d_loss": 1.0}, step=0)
        lg.finalize("success")
    finish_loggers(loggers)
    # each logger wrote its own record inside the run folder
    expected = {"csv": "csv/metrics.csv", "tensorboard": "tensorboard/events.out.tfevents.*",
                "wandb": "wandb/*", "mlflow": "mlflow.db"}
    for name in cfg.logger:
        assert list(Path(tmp_path).glob(expected[name])), f"{name} wrote nothing under {tmp_path}"


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_config_instantiates(dataset, tmp_path):
    model = "mlp_toy" if dataset.startswith("toy2d") else "dcgan"
    overrides = [f"dataset={dataset}", f"model={model}"]
    if dataset == "image_folder":
        from PIL import Image

        (tmp_path / "imgs").mkdir()
        Image.new("RGB", (70, 80), (255, 0, 0)).save(tmp_path / "imgs" / "a.png")
        overrides.append(f"dataset.root={tmp_path / 'imgs'}")
    cfg = compose_train(overrides, tmp_path)
    dm = instantiate(cfg.dataset)
    assert tuple(dm.sample_shape) == tuple(cfg.dataset.shape)
    build_module(cfg)  # the model reads the dataset's shape


@pytest.mark.parametrize("option", options("experiment") + [f"debug/{d}" for d in options("debug")])
def test_experiments_and_debug_configs_compose(option, tmp_path):
    group, name = ("debug", option.split("/")[1]) if "/" in option else ("experiment", option)
    cfg = compose_train([f"{group}={name}", *TINY_DIGITS] if group == "debug" else [f"experiment={name}"], tmp_path)
    build_module(cfg)


def test_seed_dcgan_experiment_is_the_seed_recipe(tmp_path):
    cfg = compose_train(["experiment=seed_fashion_dcgan"], tmp_path)
    assert cfg.model.generator._target_.endswith("SeedDCGANGenerator")
    assert cfg.model.optimizer.g._target_ == cfg.model.optimizer.d._target_ == "torch.optim.RMSprop"
    assert cfg.dataset.batch_size == 32 and cfg.model.loss.kind == "non_saturating" and cfg.trainer.max_epochs == 1


def test_unknown_options_fail_at_compose_time_naming_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match="bogus_key"):
        compose_train(["model.generator.bogus_key=1"], tmp_path)
    with pytest.raises(MissingConfigException, match="dcgan"):  # lists the available models
        compose_train(["model=not_a_model"], tmp_path)


def test_size_and_range_mismatches_are_startup_errors(tmp_path):
    cfg = compose_train(["model.generator.out_shape=[1,32,32]"], tmp_path)
    with pytest.raises(ValueError, match="shape"):
        validate_setup(build_module(cfg), instantiate(cfg.dataset))
    cfg = compose_train(["dataset.image_size=30", "dataset.resize=interpolate"], tmp_path)
    with pytest.raises(InstantiationException, match="30x30"):  # Hydra wraps the model's ValueError
        build_module(cfg)
    cfg = compose_train(["model=mlp_gan", "dataset.value_range=[-1.0,1.0]"], tmp_path)
    with pytest.raises(ValueError, match="output range"):
        validate_setup(build_module(cfg), instantiate(cfg.dataset))


@pytest.mark.parametrize("override, fixed", [("module.n_critic=5", "model.n_critic=5"),
                                             ("optimizer.d.lr=1e-4", "model.optimizer.d.lr=1e-4"),
                                             ("loss.r1_weight=5", "model.loss.r1_weight=5"),
                                             ("model.system.kl_weight=0.5", "model.kl_weight=0.5"),
                                             ("model.discriminator.class_weight=3", "model.loss.class_weight=3"),
                                             ("augment.p=0.3", "model.loss.augment.p=0.3")])
def test_a_key_that_moved_into_the_model_node_is_named_with_its_new_path(override, fixed):
    from gan_modules.config import moved_key_message

    assert f"write {fixed}." in moved_key_message(["model=dcgan", override])
    assert moved_key_message(["optimizer=ttur", "loss=hinge", fixed, "model.optimizer.g.lr=1e-3"]) is None


def test_fashion1k_ada_is_the_benchmarked_little_data_setting(tmp_path):
    # benchmarks/RESULTS.md, "Little data": 1,000 images, D without BatchNorm, ADA, 16,000 G steps
    cfg = compose_train(["experiment=fashion1k_ada"], tmp_path)
    assert cfg.dataset.subset == 1000 and cfg.model.discriminator.norm == "none"
    assert cfg.model.loss.augment._target_.endswith("AdaptiveAugmentation") and cfg.max_generator_steps == 16000
    assert cfg.model.generator._target_.endswith("DCGANGenerator") and cfg.model.loss.kind == "non_saturating"


# benchmarks/RESULTS.md, "PacGAN packing": the grid's setting (per-sample init, uniform latent, batch 1,024,
# rates cosine-annealed over the run) and the ring's (dense init, no schedule), each met the target in
# 8 or more of 10 seeds; both pack 4 with 5 D steps.
@pytest.mark.parametrize("data, pack_init, latent, batch, steps, annealed", [
    ("grid", "per_sample", "uniform", 1024, 30000, True),
    ("ring", "dense", "normal", 256, 20000, False)])
def test_the_pacgan_toy_experiments_are_the_benchmarked_settings(data, pack_init, latent, batch, steps, annealed,
                                                                  tmp_path):
    cfg = compose_train([f"experiment=toy_{data}_pacgan"], tmp_path)
    assert cfg.dataset.kind == data and cfg.dataset.batch_size == batch and cfg.model.loss.kind == "non_saturating"
    assert cfg.model.discriminator.pack == 4 and cfg.model.discriminator.pack_init == pack_init
    assert cfg.model.generator.latent == latent and cfg.model.generator.z_dim == 2
    assert cfg.model.n_critic == 5 and cfg.max_generator_steps == steps and cfg.model.ema_decay == 0.999
    assert cfg.model.optimizer.g.lr == cfg.model.optimizer.d.lr == 1e-3
    if not annealed:
        assert cfg.model.scheduler.g is None and cfg.model.scheduler.d is None
        return
    # stepped per generator step, over the whole run
    assert cfg.model.scheduler_interval == "step"
    for net in ("g", "d"):
        assert cfg.model.scheduler[net]._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"
        assert cfg.model.scheduler[net].T_max == cfg.max_generator_steps
    assert compose_train([f"experiment=toy_{data}_pacgan", "max_generator_steps=500"],
                         tmp_path).model.scheduler.g.T_max == 500
