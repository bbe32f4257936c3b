"""Which feature network scores a dataset: the dataset config names it (``feature_net``), an explicit
option wins, checkpoints written before the key existed still find theirs, and null is a clear error."""
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import evaluate
import generate
from datamodules.digits import DigitsDataModule
from gan_modules.callbacks.quality import SampleQuality
from gan_modules.config import CONF_DIR
from gan_modules.metrics.evaluation import dataset_config, feature_net_name
from tests.conftest import ROOT

OLD_CHECKPOINTS = sorted((ROOT / "tests" / "golden" / "checkpoints").glob("*.ckpt"))  # digits, written before the key
WGAN_GP = ROOT / "tests" / "golden" / "checkpoints" / "wgan_gp.ckpt"
FEW = ["num_samples=200", "num_real=200", "floor=false"]


def without_key_then(path):
    """The dataset config stored in a checkpoint, checked to be one from before the ``feature_net`` key."""
    dataset = torch.load(path, map_location="cpu", weights_only=True)["run_config"]["dataset"]
    assert "feature_net" not in dataset  # else these tests would not test older checkpoints
    return dataset


def with_dataset_feature_net(path, tmp_path, name):
    """A copy of a checkpoint whose dataset config names the feature network ``name`` (None: none fits)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["run_config"]["dataset"]["feature_net"] = name
    copy = tmp_path / path.name
    torch.save(checkpoint, copy)
    return copy


@pytest.mark.parametrize("dataset, name", [("digits", "digits"), ("fashion_mnist", "fashion_mnist"),
                                           ("mnist", "mnist"), ("cifar10", "cifar10"), ("image_folder", None),
                                           ("toy2d_ring", None), ("toy2d_grid", None)])
def test_each_dataset_config_names_its_feature_network(dataset, name):
    assert feature_net_name(dataset_config(dataset)) == name


def test_every_dataset_config_has_the_key():
    # A config without it would be read as an older checkpoint's and looked up by its class.
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        assert "feature_net" in OmegaConf.load(path), path.name


def test_the_datamodule_carries_its_feature_network():
    assert instantiate(dataset_config("digits")).feature_net == "digits"
    assert instantiate(dataset_config("toy2d_ring")).feature_net is None
    with pytest.raises(ValueError, match="feature_net"):
        DigitsDataModule(feature_net=3)


def quality_setup(datamodule, feature_net=None, tmp_path="."):
    callback = SampleQuality(str(tmp_path), num_samples=16, num_real=16, feature_net=feature_net)
    trainer, module = SimpleNamespace(datamodule=datamodule), SimpleNamespace(sampling_generator=torch.nn.Identity())
    callback.setup(trainer, module, "fit")
    return callback


def test_the_quality_callback_reads_the_datamodule_and_its_own_option_wins(tmp_path):
    digits = instantiate(dataset_config("digits"))
    assert quality_setup(digits, tmp_path=tmp_path).info["dataset"] == "digits"
    assert quality_setup(digits, "fashion_mnist", tmp_path).info["dataset"] == "fashion_mnist"
    digits.feature_net = None
    with pytest.raises(ValueError, match="callbacks.quality.feature_net"):
        quality_setup(digits, tmp_path=tmp_path)


def test_a_config_without_the_key_is_looked_up_by_its_class():
    assert feature_net_name({"_target_": "datamodules.idx.FashionMNISTDataModule"}) == "fashion_mnist"
    assert feature_net_name({"_target_": "datamodules.image_folder.ImageFolderDataModule"}) is None
    assert feature_net_name({"_target_": "datamodules.digits.DigitsDataModule", "feature_net": None}) is None


@pytest.mark.parametrize("path", OLD_CHECKPOINTS, ids=lambda p: p.stem)
def test_an_older_checkpoint_still_evaluates_with_its_network(path):
    without_key_then(path)
    result = evaluate.main([f"checkpoint={path}", *FEW])
    assert result["protocol"]["feature_net"] == "digits"


def test_an_explicit_feature_net_wins_over_the_checkpoint(tmp_path):
    assert evaluate.main([f"checkpoint={WGAN_GP}", *FEW, "feature_net=fashion_mnist"])["protocol"][
        "feature_net"] == "fashion_mnist"
    named = with_dataset_feature_net(WGAN_GP, tmp_path, "fashion_mnist")
    assert evaluate.main([f"checkpoint={named}", *FEW])["protocol"]["feature_net"] == "fashion_mnist"
    assert evaluate.main([f"checkpoint={named}", *FEW, "feature_net=digits"])["protocol"]["feature_net"] == "digits"


def test_an_older_checkpoint_still_does_latent_arithmetic(tmp_path, capsys):
    without_key_then(WGAN_GP)
    output = tmp_path / "arithmetic.png"
    generate.main([f"checkpoint={WGAN_GP}", "arithmetic=[3,0,9]", f"arithmetic_output={output}"])
    assert output.is_file() and "feature network (digits)" in capsys.readouterr().out


def test_a_dataset_without_a_network_says_how_to_pass_one(tmp_path):
    none_fits = with_dataset_feature_net(WGAN_GP, tmp_path, None)
    with pytest.raises(SystemExit, match="feature_net=NAME"):
        evaluate.main([f"checkpoint={none_fits}", *FEW])
    with pytest.raises(SystemExit, match="feature_net=NAME"):
        generate.main([f"checkpoint={none_fits}", "arithmetic=[3,0,9]",
                       f"arithmetic_output={tmp_path / 'arithmetic.png'}"])
    assert evaluate.main([f"checkpoint={none_fits}", *FEW, "feature_net=digits"])["protocol"]["feature_net"] == "digits"
