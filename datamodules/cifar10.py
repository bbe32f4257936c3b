"""CIFAR-10 datamodule reading the "python version" pickle batches itself.

torchvision's CIFAR10 class checks the files' md5 sums, which would reject
small or re-packed files, so torchvision is only used to download.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.base import CorruptDatasetError, DatasetNotFoundError, GANDataModule, check_int
from datamodules.safe_unpickle import UnsafePickleError, restricted_load
from datamodules.transforms import TensorImageDataset, UInt8ToRange

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_NATIVE_SIZE = 32


def read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    """Read one pickled CIFAR batch into uint8 images (N, 3, 32, 32) and int64 labels (N,).

    The pickle holds a dict with b"data" (N x 3072 uint8, each row the R, G
    then B planes in row-major order) and b"labels" (N ints). It is read with
    a restricted unpickler (``safe_unpickle``): a file that names anything but
    numpy arrays and plain containers is refused before any of it runs.
    """
    try:
        with open(path, "rb") as f:
            batch = restricted_load(f, encoding="bytes")
        data, labels = batch[b"data"], batch[b"labels"]
    except UnsafePickleError as e:
        raise CorruptDatasetError(
            f"{path}: refused, not a CIFAR-10 batch: {e}. Replace it with the original "
            "cifar-10-python.tar.gz batches."
        ) from e
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CorruptDatasetError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or not isinstance(labels, (list, np.ndarray)):
        raise CorruptDatasetError(f"{path}: b'data' must be a uint8 array and b'labels' a list of ints")
    x = torch.as_tensor(data)
    y = torch.as_tensor(list(labels), dtype=torch.int64)
    if x.dtype != torch.uint8 or x.ndim != 2 or x.shape[1] != 3 * _NATIVE_SIZE**2 or x.shape[0] != y.shape[0]:
        raise CorruptDatasetError(
            f"{path}: expected uint8 data of shape (N, 3072) and N labels, got {x.dtype} "
            f"{tuple(x.shape)} and {y.shape[0]} labels"
        )
    if y.numel() and not (0 <= int(y.min()) and int(y.max()) < 10):
        raise CorruptDatasetError(f"{path}: labels outside 0..9")
    return x.reshape(-1, 3, _NATIVE_SIZE, _NATIVE_SIZE), y


class CIFAR10DataModule(GANDataModule):
    """CIFAR-10: 32x32 colour images in 10 classes (50000 train, 10000 test).

    Looks for ``cifar-10-batches-py/`` inside ``data_dir`` (or the batch files
    in ``data_dir`` itself); ``val_size`` > 0 holds out the first training
    images for validation, else validation uses the test batch.
    """

    _shape_hint = "dataset.image_size"

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        image_size: int = _NATIVE_SIZE,
        val_size: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.download = bool(download)
        self.image_size = check_int("image_size", image_size, 1)
        self.val_size = check_int("val_size", val_size, 0)
        self._require_value_range()
        self._check_declared_shape()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        return 10

    def search_dirs(self) -> list[Path]:
        """Directories searched for the batch files, in order."""
        return [self.data_dir / BATCH_DIR, self.data_dir, self.data_dir / "cifar10" / BATCH_DIR]

    def _find(self) -> Path | None:
        for d in self.search_dirs():
            if all((d / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
                return d
        return None

    def _missing_error(self, download_error: BaseException | None) -> DatasetNotFoundError:
        lines = ["CIFAR-10 batches (data_batch_1..5, test_batch) not found. Searched:"]
        lines += [f"  {d}" for d in self.search_dirs()]
        lines.append("Get the data in one of these ways:")
        lines.append(f"  1. put the extracted {BATCH_DIR}/ folder (python version) in data_dir "
                     "(dataset.data_dir=/path/to/dir)")
        if download_error is None:
            lines.append("  2. allow the download (needs network): dataset.download=true")
        else:
            lines.append(f"  2. fix the download, which failed with: {type(download_error).__name__}: {download_error}")
        return DatasetNotFoundError("\n".join(lines))

    def _locate(self) -> Path:
        found = self._find()
        if found is None and self.download:
            try:
                from torchvision import datasets

                datasets.CIFAR10(root=str(self.data_dir), download=True)
            except Exception as e:  # network errors come in many types
                raise self._missing_error(e) from e
            found = self._find()
        if found is None:
            raise self._missing_error(None)
        return found

    def prepare_data(self) -> None:
        """Download the batches if they are nowhere to be found."""
        self._locate()

    def _load(self) -> None:
        d = self._locate()
        parts = [read_cifar_batch(d / name) for name in TRAIN_BATCHES]
        train_x = torch.cat([p[0] for p in parts])
        train_y = torch.cat([p[1] for p in parts])
        test_x, test_y = read_cifar_batch(d / TEST_BATCH)
        if self.val_size >= train_x.shape[0]:
            raise ValueError(
                f"val_size={self.val_size} leaves no training images (the set has {train_x.shape[0]}); "
                "lower dataset.val_size"
            )
        resize = None if self.image_size == _NATIVE_SIZE else "interpolate"
        transform = UInt8ToRange(self._require_value_range(), self.image_size, resize)
        v = self.val_size
        self.train_dataset = TensorImageDataset(train_x[v:], train_y[v:], transform)
        self.test_dataset = TensorImageDataset(test_x, test_y, transform)
        self.val_dataset = TensorImageDataset(train_x[:v], train_y[:v], transform) if v else self.test_dataset
