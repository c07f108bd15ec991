#!/usr/bin/env bash
# The wheels a GPU machine without internet lacks to run scripts/device_check.py (docs/gpu.md, "A GPU
# machine without internet"): what gnrepro imports beyond the PyTorch stack such an image already has
# (torch, torchvision, timm, numpy, pandas, matplotlib, scikit-learn, scipy, pillow, pytest). Pure-Python
# wheels, and pydantic-core built for the target's Python (default 3.12, x86-64 Linux), into .whl/:
#
#   bash scripts/device_wheels.sh [python version, default 3.12]        # here, with internet
#   # there, from the checkout root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   python3 scripts/device_check.py
#
# The versions are the ones pyproject.toml pins (or its pins resolve to). .whl/ is ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
rm -rf .whl && mkdir -p .whl
wheels=(
  hydra-core==1.3.8 omegaconf==2.3.1                                  # the configs
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  hydra-submitit-launcher==1.2.0 submitit==1.5.4 hydra-joblib-launcher==1.2.0   # the launcher presets
)
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${wheels[@]}" 2>/dev/null \
  || { echo "device_wheels: pip could not fetch every wheel of: ${wheels[*]} (Python $version)" >&2; exit 1; }
# hydra's parser runtime, antlr4 4.9.3, is published as a source archive only: its wheel is pure Python
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps -w .whl antlr4-python3-runtime==4.9.3 2>/dev/null \
  || { echo "device_wheels: pip could not build antlr4-python3-runtime==4.9.3" >&2; exit 1; }
du -sh .whl | awk '{print "device_wheels: " $1 " in .whl/ (carry it; the limit is 64 MiB)"}'
ls .whl
