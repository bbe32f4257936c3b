"""Files from someone else run no code: each hole gets a malicious file that would create a marker file,
and the marker must never appear.

Holes closed: a checkpoint config naming callables whose names begin like the project's (prefix
matching), nested `_target_`s in `_args_` and keyword values, interpolations in a checkpoint config,
pickled CIFAR-10 batches, checkpoint pickles, feature-network names.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from datamodules.base import CorruptDatasetError
from datamodules.cifar10 import CIFAR10DataModule, read_cifar_batch
from datamodules.safe_unpickle import UnsafePickleError, restricted_loads
from gan_modules.checkpoints import UntrustedCheckpointError, foreign_targets, load_checkpoint, load_generator
from gan_modules.config import compose_config
from gan_modules.training import train
from tests.conftest import FAST, ROOT, TINY_DIGITS, compose_train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train([*FAST, *TINY_DIGITS, "model=mlp_small", "max_generator_steps=2", "callbacks.samples=null"],
                        run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def tampered(checkpoint, path, edit):
    state = torch.load(checkpoint, weights_only=True)
    edit(state["run_config"])
    torch.save(state, path)
    return path


def cli(tool, *args):
    return subprocess.run([sys.executable, tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


# --- checkpoint configs ----------------------------------------------------------------------------
def write_text_target(target, marker):
    """A generator config that, if built, writes ``marker``: Path(marker).write_text('pwned') style."""
    return {"_target_": target, "_args_": [str(marker), "pwned"]}


@pytest.mark.parametrize("target", [
    "gan_modules.training.Path.write_text",      # begins with the project's package name
    "gan_modules.nets.dcgan.torch.save",         # reached through an allowed module
    "pathlib.Path.write_text",
    "torch.save",
    "builtins.exec",
])
def test_a_checkpoint_naming_a_writing_callable_is_refused(checkpoint, tmp_path, target):
    marker = tmp_path / "marker"
    evil = tampered(checkpoint, tmp_path / "evil.ckpt",
                    lambda cfg: cfg["model"].update(generator=write_text_target(target, marker)))
    with pytest.raises(UntrustedCheckpointError, match=target.replace(".", r"\.")):
        load_generator(evil)
    assert not marker.exists()


def test_nested_targets_in_args_and_keyword_values_are_checked(checkpoint, tmp_path):
    marker = tmp_path / "marker"

    def nest(cfg):
        cfg["model"]["generator"]["activation"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
        cfg["model"]["generator"]["extra"] = {"_target_": "gan_modules.nets.mlp.MLPGenerator",
                                              "_args_": [{"_target_": "os.system", "_args_": [f"touch {marker}"]}]}

    evil = tampered(checkpoint, tmp_path / "evil.ckpt", nest)
    assert foreign_targets(OmegaConf.create(torch.load(evil, weights_only=True)["run_config"])) == ["os.system"]
    with pytest.raises(UntrustedCheckpointError, match="os.system"):
        load_generator(evil)
    assert not marker.exists()


def test_a_dataset_target_is_checked_before_evaluate_builds_it(checkpoint, tmp_path):
    marker = tmp_path / "marker"
    evil = tampered(checkpoint, tmp_path / "evil.ckpt",
                    lambda cfg: cfg.update(dataset=write_text_target("gan_modules.training.Path.write_text", marker)))
    result = cli("evaluate.py", f"checkpoint={evil}", "num_samples=10", "num_real=10", "floor=false")
    assert result.returncode != 0 and "Path.write_text" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_generate_refuses_a_malicious_checkpoint_by_default(checkpoint, tmp_path):
    marker = tmp_path / "marker"
    evil = tampered(checkpoint, tmp_path / "evil.ckpt", lambda cfg: cfg["model"].update(
        generator=write_text_target("gan_modules.training.Path.write_text", marker)))
    result = cli("generate.py", f"checkpoint={evil}", "num_samples=2", f"output={tmp_path / 'x.npz'}")
    assert result.returncode != 0 and "gan_modules.training.Path.write_text" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "x.npz").exists()


def test_an_interpolation_in_a_checkpoint_config_is_refused(checkpoint, tmp_path):
    evil = tampered(checkpoint, tmp_path / "evil.ckpt",
                    lambda cfg: cfg["model"]["generator"].update(z_dim="${oc.env:HOME}"))
    with pytest.raises(UntrustedCheckpointError, match="interpolation"):
        load_generator(evil)


def test_every_shipped_config_passes_the_allowlist():
    for overrides in ([], ["model=cgan_dcgan_acgan"], ["model=cgan_dcgan_projection"], ["model=cgan_mlp"],
                      ["model=vae"], ["model=conv_ae"], ["model=stylegan", "dataset.image_size=32"],
                      ["model=progan", "dataset.image_size=32"], ["dataset=cifar10"], ["dataset=toy2d_ring",
                                                                                         "model=mlp_toy"],
                      ["experiment=seed_fashion_dcgan"], ["optimizer=rmsprop", "loss=wgan_gp"],
                      ["dataset=image_folder", "dataset.root=/tmp"]):
        cfg = compose_config(overrides)
        sections = ("model", "dataset")
        resolved = OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) for k in sections})
        assert foreign_targets(resolved, sections) == [], overrides


def test_the_project_checkpoint_still_loads(checkpoint):
    generator, _ = load_generator(checkpoint)
    assert generator(torch.randn(2, generator.z_dim)).shape[0] == 2


# --- pickles -------------------------------------------------------------------------------------
class Touch:
    """Unpickling this runs os.system('touch <marker>')."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_cifar_batch_does_not_run(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1, 2]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Touch(marker), b"labels": [1]}))
    with pytest.raises(CorruptDatasetError, match="data_batch_1.*posix.system|data_batch_1.*os.system"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup()
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_genuine_cifar_batches_still_load(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": [3, 4],
                                   b"filenames": [b"a.png", b"b.png"]}, protocol=protocol))
    images, labels = read_cifar_batch(path)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [3, 4]
    assert torch.equal(images.reshape(2, -1), torch.from_numpy(data))


def test_an_object_array_in_a_pickle_is_refused():
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps({b"data": np.array([1, "a"], dtype=object)}))


def test_a_checkpoint_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "run_config": {}, "payload": Touch(marker)}, path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_checkpoint(path)
    result = cli("generate.py", f"checkpoint={path}", f"output={tmp_path / 'x.npz'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    result = cli("train.py", *FAST, *TINY_DIGITS, "model=mlp_small", "max_generator_steps=1", f"ckpt_path={path}",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "cannot be read" in result.stderr
    assert not marker.exists()


def test_a_feature_network_name_cannot_leave_the_weights_folder():
    from gan_modules.metrics.features import feature_net_info

    with pytest.raises(ValueError, match="feature network name"):
        feature_net_info("../../../etc/passwd")
