"""Package layout that pyproject.toml alone cannot express.

The configs stay in the repository's top-level ``conf/`` (where Hydra users look for them)
and are shipped inside the package as ``lth.conf``, so ``python -m lth.run`` finds them from
an editable install and from a wheel alike (``lth.run.CONFIG_DIR``). pyproject.toml can either
list packages or discover them, not both; discovery keeps new subpackages of ``src/lth``
included without editing this file (a folder without ``__init__.py`` too: namespace
discovery). ``hydra_plugins.lth_seeds_launcher`` is lth's Hydra launcher (``hydra/launcher=lth_seeds``):
Hydra finds plugins only in the ``hydra_plugins`` namespace package. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages("src", include=["lth", "lth.*", "hydra_plugins", "hydra_plugins.*"], exclude=["*.__pycache__"]) + ["lth.conf"],
    package_dir={"": "src", "lth.conf": "conf"},
)
