"""lth: lottery-ticket experiments (Frankle & Carbin, ICLR 2019) with Hydra and Lightning."""

__version__ = "0.1.0"
