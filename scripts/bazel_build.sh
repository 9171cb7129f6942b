#!/usr/bin/env bash
# Bazel build of the XLA FFI kernels, offline (WORKSPACE, xla_ops/BUILD, bazel/, .bazelrc): the CPU
# module, the host emulation of the CUDA kernels and, when nvcc is found, the CUDA module, against
# the Python environment RUBIKS_PYTHON (its headers, pybind11 and jaxlib's FFI headers); then
# `bazel test //...`; then copies the modules to bazel_out/kernels/. The package loads them from
# there with RUBIKS_JAX_KERNELS_DIR=bazel_out/kernels (rubiks_jax/ops/ffi_kernels.py).
# Installs Bazel from Debian (bazel-bootstrap 4.2.3 and bazel-bootstrap-source, whose offline
# stand-ins of rules_cc, rules_java, platforms, ... .bazelrc points at) when they are missing.
#
#   RUBIKS_PYTHON=...        interpreter of the environment (default: .venv/bin/python, else python3)
#   RUBIKS_JAX_CUDA=0|1      CUDA module off / required (default: built when nvcc is found)
#   RUBIKS_JAX_CUDA_ARCHS    SM targets, as for setup.py (default "80;90")
#   BAZEL=bazel              the Bazel binary
#   --test-ops               afterwards run tests/ops with the Bazel-built modules
set -euo pipefail
cd "$(dirname "$0")/.."

MOCK_REPOS=/usr/src/bazel-bootstrap/mock_repos
BAZEL=${BAZEL:-bazel}
TEST_OPS=0
for arg in "$@"; do
  case "$arg" in
    --test-ops) TEST_OPS=1 ;;
    *) echo "usage: $0 [--test-ops]" >&2; exit 2 ;;
  esac
done

if ! command -v "$BAZEL" >/dev/null 2>&1 || [ ! -d "$MOCK_REPOS" ]; then
  echo "[bazel] installing bazel-bootstrap and bazel-bootstrap-source from Debian"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bazel-bootstrap bazel-bootstrap-source
fi

if [ -z "${RUBIKS_PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then RUBIKS_PYTHON=.venv/bin/python; else RUBIKS_PYTHON=python3; fi
fi
case "$RUBIKS_PYTHON" in
  */*) RUBIKS_PYTHON="$(cd "$(dirname "$RUBIKS_PYTHON")" && pwd)/$(basename "$RUBIKS_PYTHON")" ;;
esac
export RUBIKS_PYTHON
echo "[bazel] $("$BAZEL" --version 2>/dev/null || echo bazel), kernels against $RUBIKS_PYTHON" \
     "(jax $("$RUBIKS_PYTHON" -c 'import jax; print(jax.__version__)'))"

"$BAZEL" build //xla_ops:extensions
"$BAZEL" test //...

OUT_DIR=bazel_out/kernels
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
# The files of :extensions in this configuration (not whatever else bazel-bin/ still holds).
# Relative to the execution root, whose bazel-out/ the workspace links to.
for f in $("$BAZEL" cquery //xla_ops:extensions --output=starlark \
             --starlark:expr='"\n".join([f.path for f in target.files.to_list()])' 2>/dev/null); do
  cp "$f" "$OUT_DIR/"
done
chmod u+w "$OUT_DIR"/*
echo "[bazel] modules in $OUT_DIR: $(cd "$OUT_DIR" && echo *)"
echo "[bazel] op tests against them: RUBIKS_JAX_KERNELS_DIR=$OUT_DIR $RUBIKS_PYTHON -m pytest -q tests/ops"

if [ "$TEST_OPS" = 1 ]; then
  RUBIKS_JAX_KERNELS_DIR="$OUT_DIR" "$RUBIKS_PYTHON" -m pytest -q tests/ops
fi
