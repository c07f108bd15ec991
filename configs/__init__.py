"""The Hydra configs, shipped inside the wheel as ``gnrepro.configs``.

They live at the top of the checkout (beside ``gnrepro/``, ``scripts/`` and ``results/``) and
pyproject.toml maps this folder into the package (``package-dir``), so an editable install, a wheel
install and a plain checkout all compose the same files (gnrepro.resources finds them). This file only
makes the folder a regular package for that mapping and for ``importlib.resources``; Hydra reads the
YAML files and ignores it."""
