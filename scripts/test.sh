#!/usr/bin/env bash
# The project's test command (README.md; .ci/run calls it). From a clean clone it:
#  1. sets up .venv (requirements, kernels; the CUDA kernels too when nvcc is found) and runs the
#     whole CPU test suite there (GPU tests skip themselves without a GPU);
#  2. builds the kernels with Bazel (scripts/bazel_build.sh) and runs the op tests against them;
#  3. where a Python 3.12 interpreter exists, sets up a second small venv with the newest jax and
#     runs the op tests there, so FFI API drift shows up early.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/python -m pytest -q tests "$@"

# The Bazel build of the same kernels (offline; installs Debian's bazel-bootstrap when missing), its
# own test target, then the op tests against the Bazel-built modules.
bash scripts/bazel_build.sh
RUBIKS_JAX_KERNELS_DIR=bazel_out/kernels .venv/bin/python -m pytest -q tests/ops

py312=""
if command -v python3.12 >/dev/null 2>&1 && python3.12 -c "" 2>/dev/null; then
  py312=python3.12
elif PYENV_VERSION=3.12.1 python3.12 -c "" 2>/dev/null; then
  py312="$(PYENV_VERSION=3.12.1 python3.12 -c 'import sys; print(sys.executable)')"
fi
if [ -n "$py312" ]; then
  echo "[test] op tests on $($py312 --version) with the newest jax"
  PYTHON="$py312" VENV=.venv-py312 REQUIREMENTS=requirements-ops.txt bash scripts/setup.sh
  .venv-py312/bin/python -m pytest -q tests/ops
else
  echo "[test] no Python 3.12 interpreter: skipping the newest-jax op tests"
fi
