"""train.py and generate.py as a user runs them: run folders, multirun, the generate round trip."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_modules.checkpoints import load_generator
from gan_modules.images import to_uint8_hwc
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train

FAST_CLI = FAST + TINY_DIGITS + ["debug=default"]


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    result = run(["train.py", *FAST_CLI, f"hydra.run.dir={run_dir}", "logger=many"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_train_cli_leaves_config_checkpoint_samples_plots_and_logs(trained_run):
    assert (trained_run / "config.yaml").is_file()
    assert "${" not in (trained_run / "config.yaml").read_text()  # resolved
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (trained_run / "samples").glob("*.png")) == [
        "final.png", "step_000002.png", "step_000004.png"]
    assert {p.name for p in (trained_run / "plots").glob("*.png")} >= {"losses.png", "d_accuracy.png"}
    rows = (trained_run / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0].count("d_loss") == 1 and len(rows) == 1 + 5  # one row per generator step
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(checkpoint["state_dict"]["generator_steps"]) == 5
    assert checkpoint["run_config"]["dataset"]["_target_"].endswith("DigitsDataModule")


def test_sample_grids_reach_tensorboard(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "samples" in events.Tags()["images"]
    assert len(events.Images("samples")) == 3


def test_generate_round_trip(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "samples.npz"
    result = run(["generate.py", f"checkpoint={ckpt}", "num_samples=7", f"output={out}", "seed=3",
                  f"grid={tmp_path / 'grid.png'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    arr = np.load(out)["arr_0"]
    assert arr.shape == (7, 8, 8, 1) and arr.dtype == np.uint8 and (tmp_path / "grid.png").is_file()
    # the same seed reproduces the generator's own output on the same noise
    generator, _ = load_generator(ckpt)
    z = torch.randn(7, generator.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = to_uint8_hwc(generator(z), generator.output_range).numpy()
    assert np.array_equal(arr, expected)


def test_generate_rejects_unknown_options_and_corrupt_checkpoints(tmp_path):
    result = run(["generate.py", "checkpoint=x.ckpt", "samples=3"])
    assert result.returncode != 0 and "unknown option" in result.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    result = run(["generate.py", f"checkpoint={bad}"])
    assert result.returncode != 0 and "cannot be read" in result.stderr


def test_multirun_over_two_models(tmp_path):
    result = run(["train.py", "-m", "model=mlp_gan,dcgan", *FAST_CLI, f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
    configs = [(tmp_path / job / "config.yaml").read_text() for job in ("0", "1")]
    assert "MLPGenerator" in configs[0] and "DCGANGenerator" in configs[1]  # each job ran its own model


def test_unknown_option_on_the_command_line_is_a_clear_error():
    result = run(["train.py", "trainer.max_epochs=1", "modle=dcgan"])
    assert result.returncode != 0 and "modle" in result.stderr


def test_size_mismatch_on_the_command_line_stops_before_training(tmp_path):
    result = run(["train.py", *FAST_CLI, "model.generator.out_shape=[1,16,16]", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0 and "shape" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


MODELS_LOSSES = [(m, l) for m in ("dcgan", "dcgan_seed", "mlp_gan", "mlp_selu", "mlp_small")
                 for l in ("minimax", "non_saturating", "wgan", "wgan_gp", "hinge", "lsgan")]


@pytest.mark.parametrize("model,loss", MODELS_LOSSES + [("mlp_toy", "non_saturating"), ("mlp_toy", "wgan_gp")])
def test_fast_dev_run_every_model_with_every_loss(model, loss, tmp_path):
    data = ["dataset=toy2d_ring", "dataset.num_samples=256"] if model == "mlp_toy" else TINY_DIGITS
    cfg = compose_train([f"model={model}", f"loss={loss}", "debug=fdr", *FAST, *data], tmp_path)
    metrics = train(cfg)
    assert metrics["generator_steps"] == 1
    assert np.isfinite(metrics["d_loss"]) and np.isfinite(metrics["g_loss"])


@pytest.mark.parametrize("logger", ["wandb", "mlflow"])
def test_sample_grids_reach_wandb_and_mlflow(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train([*FAST, *TINY_DIGITS, "debug=default", f"logger={logger}"], tmp_path)
    train(cfg)
    if logger == "wandb":
        images = list(tmp_path.rglob("media/images/samples*.png"))
    else:
        images = list((tmp_path / "mlartifacts").rglob("samples/*.png"))
    assert len(images) == 3  # step 2, step 4 and final


def generator_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("generator.")}


def test_a_run_is_reproduced_from_its_saved_config(trained_run, tmp_path):
    # the documented way to rerun a run exactly: its composed config, saved by Hydra in .hydra/
    result = run(["train.py", "--config-dir", str(trained_run / ".hydra"), "--config-name", "config",
                  f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    original, rerun = generator_weights(trained_run), generator_weights(tmp_path)
    assert original.keys() == rerun.keys() and len(original) > 0
    assert all(torch.equal(original[k], rerun[k]) for k in original)
    # and a different seed gives different weights (the comparison above can fail)
    other = tmp_path / "other_seed"
    result = run(["train.py", *FAST_CLI, "seed=7", f"hydra.run.dir={other}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert not torch.equal(original["generator.net.0.weight"], generator_weights(other)["generator.net.0.weight"])


def test_resume_continues_the_counters_and_callback_state(tmp_path):
    first = compose_train([*FAST, *TINY_DIGITS, "max_generator_steps=3"], tmp_path)
    train(first)
    resumed = compose_train([*FAST, *TINY_DIGITS, "max_generator_steps=5", "ckpt_path=auto"], tmp_path)
    metrics = train(resumed)
    assert metrics["generator_steps"] == 5
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["callbacks"]["TrainingPlots"]["history"]["step"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    first_z = torch.randn(64, 100, generator=torch.Generator().manual_seed(42))
    assert torch.equal(state["callbacks"]["SampleGrid"]["fixed_z"], first_z)


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        train(compose_train([*FAST, *TINY_DIGITS, "debug=default", "ckpt_path=/nope/last.ckpt"], tmp_path))
