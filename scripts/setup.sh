#!/usr/bin/env bash
# One set-up step: creates a virtual environment, installs the requirements, then the project with
# --no-build-isolation so the kernels compile against that environment's jaxlib (FFI headers must
# match the runtime that loads them). The CUDA kernels are built too when nvcc is found.
#
#   PYTHON=python3.12  interpreter for the venv (default: python3)
#   VENV=.venv         where the venv goes (default: .venv at the repository root)
#   REQUIREMENTS=...   requirements file (default: requirements.txt; requirements-ops.txt = op only)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
REQUIREMENTS=${REQUIREMENTS:-requirements.txt}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "[setup] installing $REQUIREMENTS into $VENV"
"$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS"
echo "[setup] building rubiks-jax (kernels against jax $("$VENV/bin/python" -c 'import jax; print(jax.__version__)'))"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import rubiks_jax.ops as o; print('[setup] ffi kernels:', o.ffi_available(), '| cuda kernels built:', o.cuda_built())"
