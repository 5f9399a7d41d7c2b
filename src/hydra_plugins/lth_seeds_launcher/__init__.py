"""lth's Hydra launcher ``hydra/launcher=lth_seeds``: the seed trials of a sweep trained as one stack."""
