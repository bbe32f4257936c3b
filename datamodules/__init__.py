"""Datamodules that feed GAN training: every batch is ``(x, y)`` with float32 x and int64 y (-1 = no label)."""

from datamodules.base import CorruptDatasetError, DatasetNotFoundError, GANDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.digits import DigitsDataModule
from datamodules.idx import FashionMNISTDataModule, IDXImageDataModule, MNISTDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.toy2d import Toy2DDataModule

__all__ = [
    "CIFAR10DataModule",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "GANDataModule",
    "IDXImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "Toy2DDataModule",
]
