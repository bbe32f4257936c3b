"""Progressive growing: the schedule, the datamodule's resolution and fade, training and resume."""
import pytest
import torch

from datamodules.digits import DigitsDataModule
from gan_modules.callbacks.progressive import GrowthSchedule, ProgressiveGrowing
from gan_modules.training import train
from tests.conftest import FAST, compose_train

# The 8x8 digits grow 4 -> 8 (two stages); 1,437 training digits at batch 32 give 44 steps an epoch.
TINY = ["model.generator.z_dim=8", "model.generator.channel_base=32", "model.generator.max_channels=8",
        "model.discriminator.channel_base=32", "model.discriminator.max_channels=8"]
STYLE = ["model.generator.w_dim=8", "model.generator.mapping_layers=2"]
RUN = [*FAST, "dataset=digits", "dataset.batch_size=32", "callbacks=progressive", "callbacks.samples=null",
       "callbacks.training_plots=null", "trainer.max_epochs=-1", "trainer.reload_dataloaders_every_n_epochs=1"]


# --- schedule --------------------------------------------------------------------------------------
def test_schedule_stabilises_the_first_stage_then_fades_each_new_one_in_linearly():
    schedule = GrowthSchedule(fade_in=(0, 100, 50), stabilize=(200, 100, 10))
    assert schedule.total_images == 460
    assert schedule.progress(0) == (0, 1.0) and schedule.progress(199) == (0, 1.0)
    assert schedule.progress(200) == (1, 0.0) and schedule.progress(225) == (1, 0.25)
    assert schedule.progress(300) == (1, 1.0) and schedule.progress(399) == (1, 1.0)
    assert schedule.progress(425) == (2, 0.5) and schedule.progress(10_000) == (2, 1.0)


def test_phase_lengths_and_batch_sizes_by_resolution():
    callback = ProgressiveGrowing(fade_in_images={8: 10, "default": 20}, stabilize_images=5, batch_sizes={4: 64, 16: 8})
    assert callback.build_schedule(3) == GrowthSchedule(fade_in=(0, 10, 20), stabilize=(5, 5, 5))
    assert [callback.batch_size_at(s, 32) for s in range(3)] == [64, 32, 8]
    with pytest.raises(ValueError, match="maps resolutions"):
        ProgressiveGrowing(stabilize_images={5: 10}).build_schedule(2)


# --- data ------------------------------------------------------------------------------------------
def test_datamodule_serves_the_current_resolution_with_the_fade():
    dm = DigitsDataModule(batch_size=4, value_range=(-1.0, 1.0))
    x = torch.randn(4, 1, 8, 8)
    label = torch.arange(4)
    assert dm.on_after_batch_transfer((x, label), 0)[0] is x  # full size: untouched
    dm.set_progress(4, 1.0)
    low, same_label = dm.on_after_batch_transfer((x, label), 0)
    assert torch.allclose(low, torch.nn.functional.avg_pool2d(x, 2)) and same_label is label
    dm.set_progress(8, 0.0)  # fading 8x8 in: alpha 0 serves the 4x4 images upsampled
    faded = dm.on_after_batch_transfer((x, label), 0)[0]
    assert torch.allclose(faded, torch.nn.functional.interpolate(low, scale_factor=2))
    dm.set_progress(8, 0.5, batch_size=2)
    assert torch.allclose(dm.on_after_batch_transfer((x, label), 0)[0], (faded + x) / 2, atol=1e-6)
    assert dm.batch_size == 2
    with pytest.raises(ValueError, match="power of two"):
        dm.set_progress(3)


# --- training --------------------------------------------------------------------------------------
def test_progan_grows_switches_batch_size_and_stops_when_the_schedule_ends(tmp_path):
    # 4x4 at batch 32 for 320 images (10 steps), then 8x8 at batch 16: 320 fading + 160 stable (30 steps)
    grow = ["callbacks.progressive.stabilize_images={4: 320, 8: 160}", "callbacks.progressive.fade_in_images=320",
            "callbacks.progressive.batch_sizes={4: 32, 8: 16}"]
    metrics = train(compose_train([*RUN, "model=progan", "loss=progan", *TINY, *grow], tmp_path))
    assert metrics["generator_steps"] == 10 + 30  # the loader was rebuilt at batch 16 for 8x8
    assert metrics["resolution"] == 8 and metrics["alpha"] == 1.0 and metrics["kimg"] == pytest.approx(0.8)
    assert metrics["drift_penalty"] > 0 and metrics["gradient_penalty"] > 0  # loss=progan: WGAN-GP + drift
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["ProgressiveGrowing"]["images_seen"] == 800
    assert int(ckpt["state_dict"]["discriminator.stage"]) == 1 and ckpt["epoch"] >= 1  # epoch ended at the switch


def test_progressive_callback_needs_growing_networks_and_loader_reloads(tmp_path):
    with pytest.raises(ValueError, match="model=progan or model=stylegan"):
        train(compose_train([*RUN, "model=mlp_small"], tmp_path / "mlp"))
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        train(compose_train([*RUN, "model=progan", *TINY, "trainer.reload_dataloaders_every_n_epochs=0",
                             "callbacks.progressive.batch_sizes={4: 32, 8: 16}"], tmp_path / "reload"))


def test_resume_in_the_middle_of_a_fade_in_continues_exactly(tmp_path):
    # 704 images at 4x4, then 8x8 fades in over 1,408 and stabilises for 704: 88 steps in two epochs.
    # The first epoch ends halfway through the fade-in (alpha 0.5).
    args = [*RUN, "model=stylegan", *TINY, *STYLE, "model.loss.r1_weight=1.0", "model.ema_decay=0.9",
            "callbacks.progressive.stabilize_images=704", "callbacks.progressive.fade_in_images=1408"]
    train(compose_train([*args, "max_generator_steps=44"], tmp_path / "stopped"))
    stopped = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["callbacks"]["ProgressiveGrowing"]["images_seen"] == 1408
    assert float(stopped["state_dict"]["generator.alpha"]) == 0.5
    assert float(stopped["state_dict"]["generator_ema.alpha"]) == 0.5

    resume = f"ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.ckpt'}"
    train(compose_train([*args, resume], tmp_path / "resumed"))
    train(compose_train(args, tmp_path / "whole"))
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["callbacks"]["ProgressiveGrowing"] == b["callbacks"]["ProgressiveGrowing"] == {"images_seen": 2816}
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:  # weights, EMA weights, stage, alpha and w_avg alike
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


@pytest.mark.parametrize("dataset", ["cifar10", "image_folder"])
def test_colour_data_grows_to_32x32(dataset, tmp_path):
    from tests.test_datamodules import write_cifar, write_png

    if dataset == "cifar10":
        write_cifar(tmp_path / "data" / "cifar-10-batches-py", n=8)
        data = ["dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}", "dataset.download=false"]
    else:
        for i in range(16):
            write_png(tmp_path / "images" / f"{i}.png", size=(40, 36), color=(10 * i, 255 - 10 * i, 128))
        data = ["dataset=image_folder", f"dataset.root={tmp_path / 'images'}", "dataset.image_size=32"]
    args = [*RUN, *data, "dataset.batch_size=8", "model=progan", *TINY, "callbacks.model_checkpoint=null",
            "callbacks.progressive.stabilize_images=16", "callbacks.progressive.fade_in_images=16"]
    metrics = train(compose_train(args, tmp_path / "run"))
    assert metrics["resolution"] == 32 and metrics["kimg"] == pytest.approx(16 * 7 / 1000)
