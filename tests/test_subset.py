"""dataset.subset=N (limited-data experiments): N training samples of a fixed, seeded permutation,
class-balanced where the data is labelled, the same for every run seed; errors for impossible sizes."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules.base import subset_indices
from datamodules.digits import DigitsDataModule
from datamodules.toy2d import Toy2DDataModule
from gan_modules.preflight import ConfigError, validate_config
from tests.conftest import CONF, compose_train


def _labels(datamodule) -> torch.Tensor:
    return torch.stack([datamodule.train_dataset[i][1] for i in range(len(datamodule.train_dataset))])


def _digits(**kwargs) -> DigitsDataModule:
    datamodule = DigitsDataModule(value_range=(-1.0, 1.0), **kwargs)
    datamodule.setup()
    return datamodule


def test_digits_subset_has_n_images_balanced_over_the_classes():
    datamodule = _digits(subset=53)
    counts = torch.bincount(_labels(datamodule), minlength=10)
    assert len(datamodule.train_dataset) == 53
    # 53 = 10 * 5 + 3: the remainder goes one each to the lowest class ids
    assert counts.tolist() == [6, 6, 6] + [5] * 7


def test_the_subset_is_the_same_every_time_and_independent_of_the_global_rng():
    torch.manual_seed(1)
    first = _digits(subset=40)
    torch.manual_seed(2)
    second = _digits(subset=40)
    assert first.train_dataset.indices == second.train_dataset.indices
    assert torch.equal(first.train_dataset[0][0], second.train_dataset[0][0])


def test_subset_seed_chooses_the_permutation():
    assert _digits(subset=40, subset_seed=0).train_dataset.indices != _digits(subset=40, subset_seed=1).train_dataset.indices


def test_a_smaller_subset_is_part_of_a_larger_one():
    small, large = _digits(subset=25).train_dataset.indices, _digits(subset=100).train_dataset.indices
    assert set(small) <= set(large)


def test_the_held_out_split_is_taken_before_the_subset():
    full, subset = _digits(), _digits(subset=30, batch_size=10)
    assert len(subset.test_dataset) == len(full.test_dataset)
    assert torch.equal(subset.test_dataset.labels, full.test_dataset.labels)
    assert len(subset.train_dataloader()) == 3


def test_toy_subset_is_balanced_over_the_modes():
    datamodule = Toy2DDataModule(kind="ring", num_samples=2000, subset=100)
    datamodule.setup()
    counts = torch.bincount(_labels(datamodule), minlength=8)
    assert counts.sum() == 100 and counts.tolist() == [13] * 4 + [12] * 4


def test_a_class_that_runs_out_leaves_its_share_to_the_others():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 4)
    counts = torch.bincount(labels[subset_indices(len(labels), 30, 0, labels)], minlength=3)
    assert counts.tolist() == [13, 13, 4]


def test_unlabelled_data_takes_the_first_n_of_the_permutation():
    unlabelled = torch.full((20,), -1)
    chosen = subset_indices(20, 5, 0, unlabelled)
    assert torch.equal(chosen, subset_indices(20, 5, 0))
    assert torch.equal(chosen, torch.randperm(20, generator=torch.Generator().manual_seed(0))[:5].sort().values)


def test_null_keeps_all_the_data():
    assert len(_digits(subset=None).train_dataset) == len(_digits().train_dataset)


def test_a_subset_larger_than_the_training_set_is_refused_naming_its_size():
    n = len(_digits().train_dataset)
    with pytest.raises(ValueError, match=rf"dataset.subset={n + 1} is larger than the training set.*{n} samples"):
        _digits(subset=n + 1)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_a_subset_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="dataset.subset must be an integer >= 1"):
        DigitsDataModule(value_range=(-1.0, 1.0), subset=bad)


def test_preflight_refuses_a_subset_below_one(tmp_path):
    with pytest.raises(ConfigError, match="dataset.subset=0"):
        validate_config(compose_train(["dataset=digits", "dataset.subset=0"], tmp_path))


def test_every_dataset_config_has_subset_null_and_a_fixed_subset_seed():
    for path in sorted((CONF / "dataset").glob("*.yaml")):
        node = OmegaConf.load(path)
        assert node.subset is None and node.subset_seed == 0, path.name


def test_subset_from_the_command_line(tmp_path):
    cfg = compose_train(["model=dcgan", "dataset=digits", "dataset.subset=30", "dataset.batch_size=8"], tmp_path)
    validate_config(cfg)
    datamodule = instantiate(cfg.dataset)
    datamodule.setup()
    assert len(datamodule.train_dataset) == 30
    assert torch.bincount(_labels(datamodule), minlength=10).tolist() == [3] * 10
