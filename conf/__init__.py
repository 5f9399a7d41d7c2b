# Makes conf/ the package ``lth.conf`` when lth is installed (see setup.py), so that the
# configs ship inside the wheel and Hydra finds them from any working directory.
