#!/usr/bin/env bash
# Create ./.venv with the project's exact pins (torch's standard build runs on CPU and GPU alike).
# Uses uv for speed (the torch wheels and their CUDA libraries are several GB); plain pip works too:
#   python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
# --compile-bytecode: every process (each CLI test starts several) imports torch, torchvision, timm and
# scikit-learn; without .pyc files (uv writes none by default, nor Python under PYTHONDONTWRITEBYTECODE)
# each import compiles them anew, ~30 s of CPU per process.
.venv/bin/python -m uv pip install --quiet --compile-bytecode --python .venv/bin/python -e ".[dev]"
.venv/bin/python -c "import torch, torchvision, timm, hydra, gnrepro; print(f'gnrepro ready: torch {torch.__version__}, torchvision {torchvision.__version__}, cuda available: {torch.cuda.is_available()}')"
