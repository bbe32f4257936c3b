"""dataset.on_device: the training split held as one tensor on the device gives the DataLoader's batches,
in the DataLoader's order, drawing the same random numbers (so runs change no number)."""
from __future__ import annotations

import hashlib
import logging

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from datamodules import device_loader
from datamodules.base import GANDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.device_loader import materialise, shard_indices
from datamodules.digits import DigitsDataModule
from datamodules.idx import MNISTDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.toy2d import Toy2DDataModule
from datamodules.transforms import TensorImageDataset
from gan_modules.training import train
from tests.conftest import FAST, compose_train
from tests.test_datamodules import make_idx_dir, write_cifar, write_png

CPU = torch.device("cpu")


def digits(**kw) -> DigitsDataModule:
    kw.setdefault("batch_size", 64)
    dm = DigitsDataModule(**kw)
    dm.setup()
    return dm


def as_list(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def dataloader_epochs(loader, epochs: int, lightning_reload: bool = False) -> list:
    """Batches of ``epochs`` epochs, iterated as Lightning does: a reloaded loader is iter()-ed twice per
    epoch after the first (FitLoop.setup_data, then the epoch loop)."""
    out = []
    for epoch in range(epochs):
        if lightning_reload and epoch > 0:
            iter(loader)
        out.append(as_list(loader))
    return out


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("lightning_reload", [False, True])
def test_same_batches_and_random_draws_as_the_dataloader_over_two_epochs(drop_last, lightning_reload):
    dm = digits(drop_last=drop_last, batch_size=100)  # 1438 samples: a last partial batch of 38
    torch.manual_seed(7)
    want = dataloader_epochs(dm.train_dataloader(), 2, lightning_reload)
    rng_after_loader = torch.get_rng_state()
    torch.manual_seed(7)
    got = dataloader_epochs(dm.device_batches(CPU), 2, lightning_reload)
    assert isinstance(dm.train_dataloader(), DataLoader)  # no Trainer, no training device: a DataLoader
    assert all(same_batches(g, w) for g, w in zip(got, want))
    assert len(got[0]) == (14 if drop_last else 15) and not same_batches(got[0], got[1])  # reshuffled
    assert torch.equal(torch.get_rng_state(), rng_after_loader)  # the noise that follows is the same too


def test_persistent_worker_loader_draws_like_one_with_workers():
    dm = digits(num_workers=1)
    torch.manual_seed(3)
    loader = dm.train_dataloader()
    want = [as_list(loader) for _ in range(2)]
    rng_after_loader = torch.get_rng_state()
    torch.manual_seed(3)
    batches = dm.device_batches(CPU)
    got = [as_list(batches) for _ in range(2)]
    assert all(same_batches(g, w) for g, w in zip(got, want))
    assert torch.equal(torch.get_rng_state(), rng_after_loader)


def test_materialised_values_equal_the_items(tmp_path):
    """Each known in-memory dataset, including resized and subset ones, stacks to its items exactly."""
    sources = [
        digits(image_size=11),
        digits(subset=50),
        MNISTDataModule(data_dir=str(make_idx_dir(tmp_path / "m")), download=False, batch_size=4,
                        system_dir=str(tmp_path / "none"), image_size=32),  # padded
        MNISTDataModule(data_dir=str(make_idx_dir(tmp_path / "m2")), download=False, batch_size=4,
                        system_dir=str(tmp_path / "none"), image_size=20, resize="interpolate"),
        CIFAR10DataModule(data_dir=str(write_cifar(tmp_path / "c" / "cifar-10-batches-py").parent), download=False,
                          batch_size=4),
        Toy2DDataModule(kind="grid", num_samples=300, subset=40),
    ]
    for dm in sources:
        dm.setup()
        x, y = materialise(dm.train_dataset)
        items = [dm.train_dataset[i] for i in range(len(dm.train_dataset))]
        assert torch.equal(x, torch.stack([item[0] for item in items])), type(dm).__name__
        assert torch.equal(y, torch.stack([torch.as_tensor(item[1]) for item in items]))
        assert x.dtype == torch.float32 and y.dtype == torch.int64


def test_auto_decides_per_dataset(tmp_path):
    memory = [digits(), Toy2DDataModule(kind="ring", num_samples=500),
              MNISTDataModule(data_dir=str(make_idx_dir(tmp_path / "m")), download=False, batch_size=4,
                              system_dir=str(tmp_path / "none"))]
    for dm in memory:
        dm.setup()
        on, why = dm.on_device_plan(CPU)
        assert on and "bytes" in why, type(dm).__name__
    for name in ("a", "b"):
        write_png(tmp_path / "imgs" / f"{name}.png")
    folder = ImageFolderDataModule(root=str(tmp_path / "imgs"), image_size=8, batch_size=2)
    folder.setup()
    on, why = folder.on_device_plan(CPU)
    assert not on and "ImageFileDataset" in why
    folder.on_device = True  # true decodes the files once
    assert folder.on_device_plan(CPU)[0]
    x, _ = materialise(folder.train_dataset)
    assert torch.equal(x, torch.stack([folder.train_dataset[i][0] for i in range(2)]))
    assert not digits(on_device=False).on_device_plan(CPU)[0]


class RandomFlip:
    def __call__(self, x):
        return x.flip(-1) if torch.rand(()) < 0.5 else x


class FlippedDigits(DigitsDataModule):
    def _load(self) -> None:
        super()._load()
        ds = self.train_dataset
        self.train_dataset = TensorImageDataset(ds.images, ds.labels, RandomFlip())


def test_random_transform_is_refused_by_true_and_left_to_the_dataloader_by_auto():
    auto = FlippedDigits()
    auto.setup()
    on, why = auto.on_device_plan(CPU)
    assert not on and "RandomFlip" in why
    strict = FlippedDigits(on_device=True)
    strict.setup()
    with pytest.raises(ValueError, match="on_device=true.*RandomFlip.*on_device=false"):
        strict.on_device_plan(CPU)


def test_too_large_for_the_budget(monkeypatch):
    monkeypatch.setattr(device_loader, "device_memory_budget", lambda device: (1000, "a test budget"))
    dm = digits(on_device=True)
    n = len(dm.train_dataset)
    size = n * 64 * 4 + n * 8
    with pytest.raises(ValueError, match=f"takes {size} bytes.*budget of 1000 bytes.*on_device=false"):
        dm.on_device_plan(CPU)
    auto = digits()
    on, why = auto.on_device_plan(CPU)
    assert not on and f"{size} bytes exceed the budget of 1000" in why


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_setting_is_named(value):
    with pytest.raises(ValueError, match="on_device must be true, false or auto"):
        DigitsDataModule(on_device=value)


@pytest.mark.parametrize("n", [10, 11])
def test_two_ranks_take_disjoint_shards_that_cover_the_epoch(n):
    for epoch in (0, 1):
        shards = [shard_indices(n, 2, rank, seed=5, epoch=epoch) for rank in (0, 1)]
        assert shards[0].numel() == shards[1].numel() == (n + 1) // 2
        covered = torch.cat(shards).tolist()
        assert sorted(set(covered)) == list(range(n))
        if n % 2 == 0:
            assert not set(shards[0].tolist()) & set(shards[1].tolist())
        else:  # DistributedSampler pads with the first index of the permutation
            assert len(covered) == n + 1
        for rank in (0, 1):
            sampler = DistributedSampler(range(n), num_replicas=2, rank=rank, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            assert shards[rank].tolist() == list(sampler)
    assert not torch.equal(shard_indices(n, 2, 0, 5, 0), shard_indices(n, 2, 0, 5, 1))


def test_a_rank_gets_the_batches_of_a_distributed_dataloader(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    x, y = torch.randn(23, 2), torch.arange(23)
    dm = Toy2DDataModule(kind="ring", num_samples=23, batch_size=4, drop_last=False)
    dm.train_dataset = TensorDataset(x, y)
    for rank in (0, 1):
        sampler = DistributedSampler(dm.train_dataset, num_replicas=2, rank=rank, shuffle=True, seed=11)
        loader = DataLoader(dm.train_dataset, batch_size=4, sampler=sampler)
        batches = dm.device_batches(CPU, num_replicas=2, rank=rank, distributed=True)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches.sampler.set_epoch(epoch)  # what Lightning's _set_sampler_epoch calls
            assert same_batches(as_list(batches), as_list(loader))
        assert len(batches) == len(loader) == 3


def test_progressive_resolution_is_served_from_the_device_batches():
    dm = digits(image_size=16, batch_size=8)
    dm.set_progress(4, alpha=0.5, batch_size=4)
    x, y = next(iter(dm.device_batches(CPU)))
    assert x.shape == (4, 1, 16, 16)
    small, _ = dm.on_after_batch_transfer((x, y), 0)
    assert small.shape == (4, 1, 4, 4)


# ------------------------------------------------------------------ inside trainer.fit
class BatchDigests(pl.Callback):
    def __init__(self) -> None:
        self.digests: list[str] = []
        self.loader_types: set[str] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.digests.append(hashlib.sha1(batch[0].cpu().numpy().tobytes() + batch[1].cpu().numpy().tobytes()).hexdigest())
        self.loader_types.add(type(trainer.train_dataloader).__name__)


def fit(tmp_path, *overrides: str) -> tuple[BatchDigests, dict]:
    from gan_modules import training

    recorder = BatchDigests()
    cfg = compose_train([*FAST, "dataset=digits", "dataset.batch_size=128", "model=mlp_small", "callbacks.samples=null",
                         "callbacks.training_plots=null", "logger=csv", "seed=3", *overrides], tmp_path)
    original = training.instantiate_all
    added: list = []

    def with_recorder(group):
        found = original(group)
        if not added:
            added.append(True)
            found.append(recorder)
        return found

    training.instantiate_all = with_recorder
    try:
        train(cfg)
    finally:
        training.instantiate_all = original
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return recorder, state


@pytest.mark.parametrize("reload", [0, 1])
def test_a_fit_on_the_device_equals_the_dataloader_fit(tmp_path, reload, caplog):
    args = ("trainer.max_epochs=2", f"trainer.reload_dataloaders_every_n_epochs={reload}")
    with caplog.at_level(logging.INFO, logger="datamodules.base"):
        on, on_state = fit(tmp_path / "on", "dataset.on_device=true", *args)
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "held as one tensor" in r.message)) == 1  # logged once
    assert "cpu" in caplog.text and "bytes" in caplog.text
    off, off_state = fit(tmp_path / "off", "dataset.on_device=false", *args)
    assert on.loader_types == {"DeviceBatches"} and off.loader_types == {"DataLoader"}
    assert len(on.digests) == 2 * (1438 // 128) and on.digests == off.digests
    assert all(torch.equal(on_state[k], off_state[k]) for k in on_state)


def test_exact_resume_keeps_the_device_data_order(tmp_path):
    whole, whole_state = fit(tmp_path / "whole", "trainer.max_epochs=2", "dataset.on_device=true")
    fit(tmp_path / "cut", "trainer.max_epochs=1", "dataset.on_device=true")
    resumed, resumed_state = fit(tmp_path / "cut", "trainer.max_epochs=2", "dataset.on_device=true", "ckpt_path=auto")
    assert resumed.digests == whole.digests[len(whole.digests) // 2:]
    assert all(torch.equal(whole_state[k], resumed_state[k]) for k in whole_state)


def test_too_large_stops_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(device_loader, "device_memory_budget", lambda device: (1000, "a test budget"))
    with pytest.raises(ValueError, match="bytes.*budget of 1000 bytes"):
        fit(tmp_path, "trainer.max_epochs=1", "dataset.on_device=true")
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_every_dataset_config_names_on_device():
    from gan_modules.config import CONF_DIR

    for name in ("mnist", "fashion_mnist", "cifar10", "digits", "toy2d_ring", "toy2d_grid", "image_folder"):
        text = (CONF_DIR / "dataset" / f"{name}.yaml").read_text()
        assert "\non_device: auto " in text, name
    assert GANDataModule.__init__.__kwdefaults__["on_device"] == "auto"
