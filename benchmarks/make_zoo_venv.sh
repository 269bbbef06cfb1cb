#!/usr/bin/env bash
# Create (or reuse) the virtual environment that benchmarks/coverage.py runs in.
#
# Why a venv of its own: timm and torchvision need torchvision 0.29.1, which loads only beside
# torch 2.14.1 (a CUDA build, ~6 GB; it runs on the CPU). The project's own tests stay on torch 2.13.
# On this machine pip on Python 3.11 takes both wheels from local disk (nothing large is downloaded).
#
# Usage:
#   bash benchmarks/make_zoo_venv.sh [VENV_DIR] [HWNAS_CHECKOUT]
#     VENV_DIR        default: $HWNAS_ZOO_VENV or ~/.cache/hwnas-zoo-venv
#     HWNAS_CHECKOUT  the hwnas tree to install editable (default: this script's repository)
#
# Re-running is cheap: an existing venv that already imports everything is reused as it is.
# Afterwards:
#   VENV_DIR/bin/python benchmarks/coverage.py --res 96
# or, to measure another checkout without reinstalling:
#   PYTHONPATH=/path/to/checkout VENV_DIR/bin/python benchmarks/coverage.py
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-${HWNAS_ZOO_VENV:-$HOME/.cache/hwnas-zoo-venv}}"
checkout="${2:-$(dirname "$here")}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

# Pinned: torchvision 0.29.1 needs exactly torch 2.14.1.
zoo_pkgs=(torch==2.14.1 torchvision==0.29.1 timm transformers fvcore)
# hwnas's own dependencies (pyproject.toml), installed here because hwnas itself goes in with --no-deps.
hwnas_deps=(numpy onnx onnxruntime pandas scikit-learn tqdm matplotlib skops)

check() {
    "$venv/bin/python" - <<'EOF'
import importlib
for m in ("torch", "torchvision", "timm", "transformers", "fvcore", "onnx", "onnxruntime", "pandas",
          "sklearn", "tqdm", "matplotlib", "skops"):
    importlib.import_module(m)
import torch, torchvision
assert torch.__version__.startswith("2.14.1"), torch.__version__
torchvision.ops.nms  # fails to register if torch and torchvision do not match
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
EOF
}

if [ -x "$venv/bin/python" ] && check >/dev/null 2>&1; then
    echo "reusing $venv ($(check))"
else
    echo "creating $venv with $($python --version) (torch 2.14.1 is ~6 GB; this takes several minutes)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install "${zoo_pkgs[@]}" "${hwnas_deps[@]}"
    check
fi

# hwnas itself, editable, without touching torch. Cheap; redone each time so a new checkout path takes.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$checkout"
echo "hwnas from $checkout installed (editable) in $venv"
echo "run: $venv/bin/python $here/coverage.py --help"
