"""Tests for datamodules/: every loader is checked on tiny files written to tmp_path."""

from __future__ import annotations

import gzip
import importlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from datamodules import (
    CIFAR10DataModule,
    CorruptDatasetError,
    DatasetNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    GANDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    Toy2DDataModule,
)

REPO = Path(__file__).resolve().parents[1]
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------- helpers
def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when ``gz``)."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_images(n: int, marker: int) -> np.ndarray:
    """n 28x28 images: 255 at (0,0), 51 at (2,2), ``marker`` at (1,1), index at (27,27), else 0."""
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = 255
    x[:, 2, 2] = 51
    x[:, 1, 1] = marker
    x[:, 27, 27] = np.arange(n)
    return x


def make_idx_dir(d: Path, marker: int = 0, gz: bool = False, n_train: int = 20, n_test: int = 10) -> Path:
    """Write the four IDX files into ``d``; labels are (index * 3) % 10."""
    for split, n in (("train", n_train), ("test", n_test)):
        img_name, lab_name = IDX_NAMES[split]
        write_idx(d / img_name, fake_images(n, marker), gz)
        write_idx(d / lab_name, (np.arange(n) * 3) % 10, gz)
    return d


def idx_dm(data_dir: Path, tmp_path: Path, cls=FashionMNISTDataModule, **kw) -> GANDataModule:
    kw.setdefault("batch_size", 4)
    kw.setdefault("system_dir", str(tmp_path / "no-system-dir"))
    return cls(data_dir=str(data_dir), download=False, **kw)


def markers(dm: GANDataModule) -> float:
    return dm.train_dataset[0][0][0, 1, 1].item()


# ---------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("cls", [FashionMNISTDataModule, MNISTDataModule])
def test_idx_shapes_range_and_labels(tmp_path, gz, cls):
    dm = idx_dm(make_idx_dir(tmp_path / "d", gz=gz), tmp_path, cls=cls)
    assert dm.sample_shape == (1, 28, 28) and dm.num_classes == 10 and dm.is_image
    dm.setup()
    assert len(dm.train_dataset) == 20 and len(dm.test_dataset) == 10
    xs, ys = zip(*dm.test_dataloader())
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (10, 1, 28, 28) and y.shape == (10,)
    assert torch.equal(y, (torch.arange(10) * 3) % 10)  # labels in file order
    assert torch.all(x[:, 0, 0, 0] == 1.0) and torch.all(x[:, 0, 5, 5] == -1.0)
    assert torch.allclose(x[:, 0, 2, 2], torch.full((10,), 51 / 255 * 2 - 1))
    assert x[7, 0, 27, 27].item() == pytest.approx(7 / 255 * 2 - 1)


def test_idx_custom_value_range_and_loaders(tmp_path):
    dm = idx_dm(make_idx_dir(tmp_path / "d"), tmp_path, value_range=(0.0, 1.0), batch_size=8)
    assert dm.value_range == (0.0, 1.0)
    train = list(dm.train_dataloader())  # also runs setup itself
    assert [len(b[0]) for b in train] == [8, 8]  # 20 images, drop_last
    assert [len(b[0]) for b in dm.val_dataloader()] == [8, 2]
    x = train[0][0]
    assert x.max().item() == 1.0 and x.min().item() == 0.0
    assert x[0, 0, 2, 2].item() == pytest.approx(0.2)


def test_idx_lookup_order(tmp_path, monkeypatch):
    data_dir, system = make_idx_dir(tmp_path / "d", marker=255), make_idx_dir(tmp_path / "sys", marker=0)
    dm = FashionMNISTDataModule(data_dir=str(data_dir), system_dir=str(system), download=False)
    dm.setup()
    assert markers(dm) == 1.0  # data_dir wins over system_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    dm = FashionMNISTDataModule(data_dir=str(empty), system_dir=str(system), download=False)
    dm.setup()
    assert markers(dm) == -1.0  # falls back to system_dir
    for sub, cls in (("FashionMNIST/raw", FashionMNISTDataModule), ("MNIST/raw", MNISTDataModule),
                     ("fashion-mnist", FashionMNISTDataModule), ("mnist", MNISTDataModule)):
        root = tmp_path / sub.replace("/", "_")
        make_idx_dir(root / sub, marker=255, gz=True)
        dm = cls(data_dir=str(root), system_dir=str(system), download=False)
        dm.setup()
        assert markers(dm) == 1.0, sub


@pytest.mark.parametrize("missing", ["t10k-labels-idx1-ubyte", "train-images-idx3-ubyte"])
@pytest.mark.parametrize("explicit", [True, False])
def test_idx_incomplete_data_dir_is_an_error_naming_the_missing_file(tmp_path, missing, explicit):
    d = make_idx_dir(tmp_path / "d", gz=True)
    (d / (missing + ".gz")).unlink()
    system = make_idx_dir(tmp_path / "sys")
    # explicit: a data_dir of the user's own; else the project's data folder with the system fallback.
    kw = {} if explicit else {"default_data_dir": str(d), "system_dir": str(system)}
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNISTDataModule(data_dir=str(d), download=True, **kw)  # no download can mend it: at once
    msg = str(info.value)
    assert missing in msg and str(d) in msg and "dataset.data_dir" in msg
    for present in set(n for pair in IDX_NAMES.values() for n in pair) - {missing}:
        assert f"lacks {present}" not in msg and f", {present}" not in msg


def test_idx_own_data_dir_without_files_does_not_read_the_system_copy(tmp_path, monkeypatch):
    system = make_idx_dir(tmp_path / "sys", marker=0)
    monkeypatch.setattr(FashionMNISTDataModule, "default_system_dir", str(system))
    # A typo'd folder: stops before any work, saying so.
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        FashionMNISTDataModule(data_dir=str(tmp_path / "typo"), default_data_dir=str(tmp_path / "data"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="system_dir") as info:
        FashionMNISTDataModule(data_dir=str(empty), download=False, default_data_dir=str(tmp_path / "data"))
    assert str(system) not in info.value.args[0].split("Get the data")[0]  # not searched
    # The project's data folder (the config's default) still falls back to the system copy.
    dm = FashionMNISTDataModule(data_dir=str(empty), download=False, default_data_dir=str(empty))
    dm.setup()
    assert markers(dm) == -1.0
    # An existing empty folder of the user's own with download=true: downloaded into it.
    import torchvision.datasets

    calls = []

    class FakeFashion:
        def __init__(self, root, download):
            calls.append(root)
            make_idx_dir(Path(root) / "FashionMNIST" / "raw", marker=255)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashion)
    dm = FashionMNISTDataModule(data_dir=str(empty), download=True, default_data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup()
    assert calls == [str(empty)] and markers(dm) == 1.0


def test_idx_data_dir_rule_in_the_composed_config(tmp_path):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from tests.conftest import compose_train

    partial = make_idx_dir(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte").unlink()
    cfg = compose_train([f"dataset.data_dir={partial}"], tmp_path / "run")
    with pytest.raises(InstantiationException, match="t10k-labels-idx1-ubyte"):
        instantiate(cfg.dataset)
    # Left at paths.data_dir, an empty data folder still reads the system copy.
    cfg = compose_train([f"paths.data_dir={tmp_path / 'nothing'}", f"dataset.system_dir={tmp_path / 'x'}"],
                        tmp_path / "run")
    dm = instantiate(cfg.dataset)
    assert dm.system_fallback and dm.data_dir == tmp_path / "nothing"
    cfg = compose_train([f"paths.data_dir={tmp_path / 'nothing'}"], tmp_path / "run")
    assert instantiate(cfg.dataset).system_fallback


def test_idx_missing_data_error(tmp_path):
    dm = idx_dm(tmp_path / "nothing", tmp_path)
    assert dm.sample_shape == (1, 28, 28)  # metadata needs no data
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    msg = str(info.value)
    assert isinstance(info.value, DatasetNotFoundError)
    for text in ("apt-get install dataset-fashion-mnist", "data_dir", "download", str(tmp_path / "nothing"),
                 str(tmp_path / "no-system-dir"), "FashionMNIST/raw"):
        assert text in msg


def test_idx_download_uses_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashion:
        def __init__(self, root, download):
            calls.append((root, download))
            make_idx_dir(Path(root) / "FashionMNIST" / "raw", marker=255, gz=True)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashion)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), system_dir=str(tmp_path / "x"), download=True)
    dm.prepare_data()
    dm.setup()
    assert calls == [(str(tmp_path), True)] and markers(dm) == 1.0

    def offline(root, download):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DatasetNotFoundError, match="Name or service not known"):
        MNISTDataModule(data_dir=str(tmp_path / "m"), system_dir=str(tmp_path / "x")).setup()


@pytest.mark.parametrize("damage", ["truncate", "magic", "gzip"])
def test_idx_corrupt_file_names_the_file(tmp_path, damage):
    d = make_idx_dir(tmp_path / "d", gz=damage == "gzip")
    name = "train-images-idx3-ubyte" + (".gz" if damage == "gzip" else "")
    raw = (d / name).read_bytes()
    if damage == "magic":
        raw = b"\x00\x00\x0d\x03" + raw[4:]
    else:
        raw = raw[: len(raw) - 37]
    (d / name).write_bytes(raw)
    with pytest.raises(CorruptDatasetError, match=name):
        idx_dm(d, tmp_path).setup()


def test_idx_pad_and_interpolate(tmp_path):
    d = make_idx_dir(tmp_path / "d")
    dm = idx_dm(d, tmp_path, image_size=32)
    assert dm.sample_shape == (1, 32, 32)
    dm.setup()
    x = dm.train_dataset[3][0]
    assert x.shape == (1, 32, 32)
    assert x[0, 2, 2].item() == 1.0 and x[0, 29, 29].item() == pytest.approx(3 / 255 * 2 - 1)
    border = torch.cat([x[0, :2].flatten(), x[0, 30:].flatten(), x[0, :, :2].flatten(), x[0, :, 30:].flatten()])
    assert torch.all(border == -1.0)  # padding is background mapped to lo
    dm = idx_dm(d, tmp_path, image_size=14, resize="interpolate")
    dm.setup()
    x = dm.train_dataset[0][0]
    assert x.shape == (1, 14, 14) and -1.0 <= x.min() and x.max() <= 1.0 and x[0, 0, 0] > -1.0
    with pytest.raises(ValueError, match="interpolate"):
        idx_dm(d, tmp_path, image_size=14)


def test_idx_val_size_holds_out_first_images(tmp_path):
    dm = idx_dm(make_idx_dir(tmp_path / "d"), tmp_path, val_size=5)
    dm.setup()
    assert len(dm.train_dataset) == 15 and len(dm.val_dataset) == 5 and len(dm.test_dataset) == 10
    val_y = torch.cat([y for _, y in dm.val_dataloader()])
    assert torch.equal(val_y, (torch.arange(5) * 3) % 10)
    assert dm.train_dataset[0][1].item() == (5 * 3) % 10
    with pytest.raises(ValueError, match="val_size"):
        idx_dm(tmp_path / "d", tmp_path, val_size=20).setup()


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    # An empty data_dir of the user's own reads the system copy only when asked to by name.
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), system_dir=str(SYSTEM_FASHION), download=False)
    dm.setup()
    assert len(dm.train_dataset) == 60000 and len(dm.test_dataset) == 10000
    labels = dm.train_dataset.labels
    assert torch.equal(torch.bincount(labels), torch.full((10,), 6000))
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.min() >= -1.0 and x.max() <= 1.0 and y.dtype == torch.int64


# ---------------------------------------------------------------- common arguments
@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"num_workers": -1}, "num_workers"),
    ({"value_range": (1.0, -1.0)}, "value_range"),
    ({"value_range": [0.0]}, "value_range"),
    ({"value_range": None}, "value_range"),
    ({"resize": "crop"}, "'pad', 'interpolate'"),
    ({"shape": (1, 32, 32)}, r"\[1, 32, 32\].*\[1, 28, 28\].*image_size"),
])
def test_argument_validation(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        idx_dm(tmp_path, tmp_path, **kwargs)


def test_loader_options(tmp_path):
    dm = idx_dm(make_idx_dir(tmp_path / "d"), tmp_path, num_workers=1, shape=[1, 28, 28])
    dm.setup()
    assert dm.train_dataloader().persistent_workers and not dm.val_dataloader().drop_last
    with pytest.raises(ValueError, match="drop_last"):
        idx_dm(tmp_path / "d", tmp_path, batch_size=64).train_dataloader()
    assert len(list(idx_dm(tmp_path / "d", tmp_path, batch_size=64, drop_last=False).train_dataloader())) == 1


# ---------------------------------------------------------------- CIFAR-10
def write_cifar(d: Path, n: int = 4) -> Path:
    """Fake cifar-10-batches-py/: batch b, image k has R=255, G=0, B=10*b+k, label (b+k) % 10."""
    d.mkdir(parents=True)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = 255
        data[:, 2] = (10 * b + np.arange(n))[:, None, None]
        batch = {b"data": data.reshape(n, 3072), b"labels": [(b + k) % 10 for k in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch))
    return d


def test_cifar10_reads_pickles(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, batch_size=4, val_size=2)
    assert dm.sample_shape == (3, 32, 32) and dm.num_classes == 10
    dm.setup()
    assert len(dm.train_dataset) == 18 and len(dm.val_dataset) == 2 and len(dm.test_dataset) == 4
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.tensor([5, 6, 7, 8]))  # test batch is b=5
    assert torch.all(x[:, 0] == 1.0) and torch.all(x[:, 1] == -1.0)  # channel planes in RGB order
    assert x[3, 2, 0, 0].item() == pytest.approx(53 / 255 * 2 - 1)
    assert dm.train_dataset[0][1].item() == 2  # first two training images held out
    small = CIFAR10DataModule(data_dir=str(tmp_path), download=False, image_size=16)
    small.setup()
    assert small.train_dataset[0][0].shape == (3, 16, 16)


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup()
    assert "cifar-10-batches-py" in str(info.value) and "download" in str(info.value)
    d = write_cifar(tmp_path / "cifar-10-batches-py")
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(CorruptDatasetError, match="data_batch_3"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup()


# ---------------------------------------------------------------- image folder
def write_png(path: Path, size=(20, 20), color=(255, 255, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_image_folder_labels_from_sorted_subfolders(tmp_path):
    for cls_name, count in (("zebra", 2), ("ant", 3)):
        for i in range(count):
            write_png(tmp_path / cls_name / f"{i}.png", size=(30 + i, 20))
    write_png(tmp_path / "ant" / "deep" / "UPPER.JPG", size=(20, 20))
    write_png(tmp_path / ".hidden" / "x.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, batch_size=2)
    assert dm.num_classes == 2 and dm.class_names == ["ant", "zebra"]
    dm.setup()
    assert len(dm.train_dataset) == 6
    assert sorted(dm.train_dataset.labels.tolist()) == [0, 0, 0, 0, 1, 1]
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.all(x == 1.0)  # white maps to hi


def test_image_folder_resize_then_center_crop(tmp_path):
    img = np.zeros((20, 60, 3), dtype=np.uint8)
    img[:, 20:40] = 255  # white middle third of a wide image
    Image.fromarray(img).save(tmp_path / "wide.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, channels=1, value_range=(0.0, 1.0))
    assert dm.sample_shape == (1, 16, 16)
    dm.setup()
    x, y = dm.train_dataset[0]
    assert x.shape == (1, 16, 16) and y.item() == -1
    # The crop keeps the white middle; squashing the whole image would leave it two-thirds black.
    assert x.mean().item() > 0.9 and torch.all(x[:, :, 3:13] == 1.0)


def test_image_folder_unlabelled_and_label_modes(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "sub" / "b.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, batch_size=2)
    assert dm.num_classes is None
    _, y = next(iter(dm.train_dataloader()))
    assert torch.equal(y, torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="a.png"):
        ImageFolderDataModule(root=str(tmp_path), labels="folders").setup()
    assert ImageFolderDataModule(root=str(tmp_path / "sub"), labels="none").num_classes is None
    with pytest.raises(ValueError, match="'auto', 'folders', 'none'"):
        ImageFolderDataModule(root=str(tmp_path), labels="dirs")
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataModule(root=str(tmp_path), channels=4)


def test_image_folder_bad_images(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"ok{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CorruptDatasetError) as info:
        ImageFolderDataModule(root=str(tmp_path), image_size=8).setup()
    assert "broken.png" in str(info.value) and "dataset.on_bad_image=skip" in str(info.value)
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, on_bad_image="skip", batch_size=3)
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        dm.setup()
    assert len(dm.train_dataset) == 3 and len(list(dm.train_dataloader())) == 1


def test_image_folder_missing_empty_and_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does-not-exist"):
        ImageFolderDataModule(root=str(tmp_path / "does-not-exist")).setup()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        ImageFolderDataModule(root=str(tmp_path)).num_classes
    for i in range(8):
        write_png(tmp_path / f"{i}.png")
    splits = []
    for seed in (0, 0, 1):
        dm = ImageFolderDataModule(root=str(tmp_path), test_fraction=0.25, seed=seed, batch_size=2)
        dm.setup()
        assert len(dm.train_dataset) == 6 and len(dm.test_dataset) == 2 and dm.val_dataset is dm.test_dataset
        assert not set(dm.train_dataset.files) & set(dm.test_dataset.files)
        splits.append(dm.test_dataset.files)
    assert splits[0] == splits[1]


# ---------------------------------------------------------------- digits
def test_digits(tmp_path):
    dm = DigitsDataModule(batch_size=16)
    assert dm.sample_shape == (1, 8, 8) and dm.num_classes == 10
    dm.setup()
    assert len(dm.train_dataset) + len(dm.test_dataset) == 1797
    assert len(dm.test_dataset) == round(1797 * 0.2)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # pixel 0 -> lo, pixel 16 -> hi
    assert set(torch.cat([dm.train_dataset.labels, dm.test_dataset.labels]).tolist()) == set(range(10))
    big = DigitsDataModule(image_size=32, seed=1)
    big.setup()
    assert big.train_dataset[0][0].shape == (1, 32, 32)
    assert not torch.equal(big.test_dataset.labels, dm.test_dataset.labels)  # split depends on seed
    again = DigitsDataModule()
    again.setup()
    assert torch.equal(again.test_dataset.labels, dm.test_dataset.labels)


# ---------------------------------------------------------------- toy 2-D
def test_toy_ring():
    dm = Toy2DDataModule(kind="ring", num_samples=16000, batch_size=32)
    assert dm.sample_shape == (2,) and dm.value_range is None and not dm.is_image
    assert dm.num_classes == 8 and dm.modes.shape == (8, 2) and dm.std == 0.01
    assert torch.allclose(dm.modes[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    dm.setup()
    x, y = dm.train_dataset.tensors
    assert x.shape == (16000, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.norm(dim=1).mean().item() - 1.0) < 0.05
    counts = torch.bincount(y, minlength=8).float()
    assert torch.all((counts / 16000 - 1 / 8).abs() < 0.02)
    assert (x - dm.modes[y]).norm(dim=1).max() < 0.1  # label is the mode the point came from
    assert len(dm.test_dataset) == 1600
    assert not torch.equal(dm.test_dataset.tensors[0][:10], x[:10])
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (32, 2) and yb.shape == (32,)


def test_toy_grid_and_validation():
    dm = Toy2DDataModule(kind="grid", num_samples=20000, seed=3)
    assert dm.num_classes == 25 and dm.std == 0.05
    assert set(dm.modes.flatten().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    dm.setup()
    x, y = dm.train_dataset.tensors
    assert torch.bincount(y, minlength=25).min() > 0.8 * 20000 / 25
    assert abs((x - dm.modes[y]).std().item() - 0.05) < 0.005
    with pytest.raises(ValueError, match="'ring', 'grid'"):
        Toy2DDataModule(kind="spiral")
    with pytest.raises(ValueError, match="data_range=null"):
        Toy2DDataModule(value_range=[-1.0, 1.0])
    with pytest.raises(ValueError, match=r"\[3\]"):
        Toy2DDataModule(shape=[3])


# ---------------------------------------------------------------- configs
CONFIGS = ["fashion_mnist", "mnist", "cifar10", "image_folder", "digits", "toy2d_ring", "toy2d_grid"]


@pytest.mark.parametrize("name", CONFIGS)
def test_dataset_config(tmp_path, name):
    path = REPO / "conf" / "dataset" / f"{name}.yaml"
    assert path.read_text().startswith("#")  # header comment
    cfg = OmegaConf.load(path)
    module, cls_name = cfg._target_.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls_name)
    assert issubclass(cls, GANDataModule)
    assert isinstance(cfg.batch_size, int) and cfg.batch_size >= 1 and cfg.num_workers == 0
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["seed"] == "${seed}" and raw["value_range"] == "${model.data_range}"
    # Resolve against stand-ins for the rest of the config and build the datamodule (no data loaded).
    data_range = None if name.startswith("toy") else [-1.0, 1.0]
    if name == "image_folder":  # it lists the folder's files when built
        (tmp_path / "images").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    root = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "model": {"data_range": data_range},
                             "seed": 0, "dataset": cfg})
    kwargs = OmegaConf.to_container(root.dataset, resolve=True)
    kwargs.pop("_target_")
    dm = cls(**kwargs)
    assert list(dm.sample_shape) == kwargs["shape"]


def test_image_folder_root_problems_stop_at_construction(tmp_path):
    # Before any data is loaded or the run folder gets files: train.py builds the datamodule first.
    with pytest.raises(ValueError, match=r"dataset\.root is not set.*dataset\.root=/path/to/images"):
        ImageFolderDataModule(root=None)
    with pytest.raises(DatasetNotFoundError, match="does not exist.*dataset.root="):
        ImageFolderDataModule(root=str(tmp_path / "typo"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        ImageFolderDataModule(root=str(tmp_path / "empty"))
