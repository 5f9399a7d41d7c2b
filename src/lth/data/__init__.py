"""LightningDataModules that hold their splits whole on the training device."""

from lth.data.base import OnDeviceDataModule
from lth.data.cifar10 import CIFAR10DataModule
from lth.data.digits import DigitsDataModule
from lth.data.mnist import MNISTDataModule
from lth.data.stream import BatchStream

__all__ = ["BatchStream", "CIFAR10DataModule", "DigitsDataModule", "MNISTDataModule", "OnDeviceDataModule"]
