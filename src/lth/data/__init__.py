"""LightningDataModules that hold their splits whole on the training device (imported on first use:
:mod:`lth.data.facts` and the file checks need no torch)."""

from lth import lazy

_WHERE = {"BatchStream": "stream", "CIFAR10DataModule": "cifar10", "DigitsDataModule": "digits",
          "MNISTDataModule": "mnist", "OnDeviceDataModule": "base"}
__all__ = sorted(_WHERE)
__getattr__ = lazy(__name__, _WHERE)
