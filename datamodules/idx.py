"""Fashion-MNIST and MNIST datamodules read from IDX files.

Where the four files are looked for (``data_dir`` means ``data_dir``, ``data_dir/<name>/`` and
torchvision's ``data_dir/<Name>/raw/``):

1. A folder there that holds some but not all four files is an error naming the missing ones, always:
   a half-copied data set must not be replaced silently by another copy.
2. ``data_dir`` left at the project's data folder (``default_data_dir``, ``paths.data_dir`` in the
   configs) and holding none of them: ``system_dir`` (where Debian's ``dataset-fashion-mnist`` package
   installs them), then, with ``download`` true, torchvision downloads them into ``data_dir``.
   The same holds when ``system_dir`` is given explicitly: that is asking for the system copy.
3. A ``data_dir`` of your own holding none of them: the files are downloaded into it when ``download``
   is true and the folder exists (a folder that does not exist is most likely a typo, so it is an
   error); otherwise an error. The system copy is not used in its place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor

from datamodules.base import (
    CorruptDatasetError,
    DatasetNotFoundError,
    GANDataModule,
    check_choice,
    check_int,
)
from datamodules.idx_format import IDX_FILES, find_idx_files, read_idx
from datamodules.transforms import TensorImageDataset, UInt8ToRange

_NATIVE_SIZE = 28
log = logging.getLogger(__name__)


class IDXImageDataModule(GANDataModule):
    """Base for 28x28 grayscale, 10-class datasets stored as four IDX files.

    ``val_size`` > 0 holds out the first ``val_size`` training images, which
    ``val_dataloader`` then serves; otherwise it serves the t10k test split.
    """

    title = "MNIST-like"
    subdir_names: tuple[str, ...] = ()
    torchvision_name = ""
    default_system_dir = ""
    apt_hint: str | None = None
    _shape_hint = "dataset.image_size (and dataset.resize)"

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = _NATIVE_SIZE,
        resize: str = "pad",
        val_size: int = 0,
        download: bool = True,
        system_dir: str | None = None,
        default_data_dir: str = "data",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if data_dir is None or not str(data_dir).strip():
            raise ValueError(f"dataset.data_dir is not set: give the folder of the {self.title} IDX files, "
                             "e.g. dataset.data_dir=./data")
        self.data_dir = Path(data_dir).expanduser()
        self.image_size = check_int("image_size", image_size, 1)
        self.resize = check_choice("resize", resize, ("pad", "interpolate"))
        if self.resize == "pad" and self.image_size < _NATIVE_SIZE:
            raise ValueError(
                f"image_size={image_size} is smaller than the {_NATIVE_SIZE}x{_NATIVE_SIZE} images, "
                "so they cannot be padded; set dataset.resize=interpolate"
            )
        self.val_size = check_int("val_size", val_size, 0)
        self.download = bool(download)
        self.system_dir = Path(system_dir or self.default_system_dir).expanduser()
        # The system copy stands in only for the project's own data folder, or when asked for by name.
        self.system_fallback = system_dir is not None or _same_dir(self.data_dir, Path(default_data_dir).expanduser())
        self._require_value_range()
        self._check_declared_shape()
        self._check_location()  # file names only: a wrong data_dir stops before any work

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        return 10

    def local_dirs(self) -> list[Path]:
        """The folders under ``data_dir`` searched for the IDX files, in order."""
        local = [self.data_dir] + [self.data_dir / s for s in self.subdir_names]
        return local + [self.data_dir / self.torchvision_name / "raw"]

    def search_dirs(self) -> list[Path]:
        """Directories searched for the IDX files, in order."""
        return self.local_dirs() + ([self.system_dir] if self.system_fallback else [])

    def _incomplete_error(self, notes: list[str]) -> DatasetNotFoundError:
        lines = [f"dataset.data_dir={self.data_dir} holds only some of the four {self.title} IDX files:"]
        lines += [f"  {n}" for n in notes]
        lines.append("Looked in: " + ", ".join(str(d) for d in self.local_dirs()))
        lines.append("Add the missing files (plain or .gz), or point dataset.data_dir at a folder that holds all "
                     "four; the files are not mixed with another copy.")
        return DatasetNotFoundError("\n".join(lines))

    def _check_location(self) -> None:
        """Raise at once for what no download can mend: an incomplete folder, a data_dir of your own
        that does not exist, or one without the files when downloads are off."""
        files, notes = find_idx_files(self.local_dirs())
        if files is not None:
            return
        if notes:
            raise self._incomplete_error(notes)
        if self.system_fallback:
            return
        if not self.data_dir.is_dir():
            raise DatasetNotFoundError(
                f"dataset.data_dir={self.data_dir} does not exist. Fix the path, or create the folder to have "
                f"{self.title} downloaded into it (dataset.download=true), or leave dataset.data_dir unset to read "
                f"the project's data folder and then the system copy ({self.system_dir})."
            )
        if not self.download:
            raise self._missing_error([], download_error=None)

    def _missing_error(self, notes: list[str], download_error: BaseException | None) -> DatasetNotFoundError:
        names = ", ".join(f"{n}[.gz]" for n in IDX_FILES.values())
        ways = [f"put the four IDX files ({names}) in data_dir (dataset.data_dir=/path/to/dir)"]
        if self.apt_hint:
            ways.append(self.apt_hint)
        if not self.system_fallback:
            ways.append(f"read the system copy: leave dataset.data_dir unset, or name the folder with "
                        f"dataset.system_dir={self.system_dir}")
        if download_error is None:
            ways.append("allow the download (needs network): dataset.download=true")
        else:
            ways.append(f"fix the download, which failed with: {type(download_error).__name__}: {download_error}")
        lines = [f"{self.title} IDX files not found. Searched:"]
        lines += [f"  {d}" for d in self.search_dirs()] + [f"  ({n})" for n in notes]
        lines.append("Get the data in one of these ways:")
        lines += [f"  {i}. {w}" for i, w in enumerate(ways, 1)]
        return DatasetNotFoundError("\n".join(lines))

    def _download(self) -> None:
        try:
            from torchvision import datasets

            getattr(datasets, self.torchvision_name)(root=str(self.data_dir), download=True)
        except Exception as e:  # network errors come in many types
            raise self._missing_error([], download_error=e) from e

    def _locate(self) -> dict[str, Path]:
        self._check_location()  # the folder may have changed since the constructor
        files, notes = find_idx_files(self.search_dirs())
        if files is None and self.download:
            log.info("Downloading %s into %s", self.title, self.data_dir)
            self._download()
            files, notes = find_idx_files(self.local_dirs())
        if files is None:
            raise self._missing_error(notes, download_error=None)
        if self.system_fallback and files["train_images"].parent == self.system_dir:
            log.info("%s: none of the IDX files in %s, reading the system copy in %s", self.title, self.data_dir,
                     self.system_dir)
        return files

    def prepare_data(self) -> None:
        """Download the files if they are nowhere to be found (Lightning calls this on one process)."""
        self._locate()

    def _read_split(self, images: Path, labels: Path) -> tuple[Tensor, Tensor]:
        x = read_idx(images, ndim=3)
        y = read_idx(labels, ndim=1)
        if tuple(x.shape[1:]) != (_NATIVE_SIZE, _NATIVE_SIZE):
            raise CorruptDatasetError(f"{images}: expected {_NATIVE_SIZE}x{_NATIVE_SIZE} images, got {tuple(x.shape[1:])}")
        if x.shape[0] != y.shape[0]:
            raise CorruptDatasetError(f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels")
        if y.numel() and int(y.max()) >= 10:
            raise CorruptDatasetError(f"{labels}: label {int(y.max())} is outside 0..9")
        return x.unsqueeze(1), y.long()

    def _load(self) -> None:
        files = self._locate()
        train_x, train_y = self._read_split(files["train_images"], files["train_labels"])
        test_x, test_y = self._read_split(files["test_images"], files["test_labels"])
        if self.val_size >= train_x.shape[0]:
            raise ValueError(
                f"val_size={self.val_size} leaves no training images (the set has {train_x.shape[0]}); "
                "lower dataset.val_size"
            )
        resize = None if self.image_size == _NATIVE_SIZE else self.resize
        transform = UInt8ToRange(self._require_value_range(), self.image_size, resize)
        v = self.val_size
        self.train_dataset = TensorImageDataset(train_x[v:], train_y[v:], transform)
        self.test_dataset = TensorImageDataset(test_x, test_y, transform)
        self.val_dataset = TensorImageDataset(train_x[:v], train_y[:v], transform) if v else self.test_dataset


def _same_dir(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


class FashionMNISTDataModule(IDXImageDataModule):
    """Fashion-MNIST: 28x28 grayscale images of clothing in 10 classes (60000 train, 10000 test)."""

    title = "Fashion-MNIST"
    subdir_names = ("fashion-mnist", "fashion_mnist")
    torchvision_name = "FashionMNIST"
    default_system_dir = "/usr/share/datasets/fashion-mnist"
    apt_hint = "install Debian's package: sudo apt-get install dataset-fashion-mnist (to /usr/share/datasets/fashion-mnist)"


class MNISTDataModule(IDXImageDataModule):
    """MNIST: 28x28 grayscale handwritten digits 0-9 (60000 train, 10000 test)."""

    title = "MNIST"
    subdir_names = ("mnist",)
    torchvision_name = "MNIST"
    default_system_dir = "/usr/share/datasets/mnist"
    apt_hint = "copy them from another machine into system_dir (dataset.system_dir=/path; no Debian package ships MNIST)"
