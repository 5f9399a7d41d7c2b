"""lth: lottery-ticket experiments (Frankle & Carbin, ICLR 2019) with Hydra and Lightning."""

__version__ = "0.1.0"


def lazy(package: str, where: dict[str, str]):
    """A package's ``__getattr__`` (PEP 562) importing ``name`` from its module ``where[name]`` on first use, so that
    the package's torch-free modules (the configuration's checks read them) load without torch."""
    import importlib

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
    return __getattr__
