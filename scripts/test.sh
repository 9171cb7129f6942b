#!/usr/bin/env bash
# The project's test command (README.md; .ci/run calls it).
#
#   bash scripts/test.sh          from a clean clone: set-up, then every stage below (CI)
#   bash scripts/test.sh --quick  after a small change, with an existing .venv: rebuilds the kernels
#                                 only if xla_ops/ changed, then the suite without the tests marked
#                                 `slow` (training runs, CLI subprocesses, packaging, nvcc)
#
# Stages of the full run, each timed (a summary line per stage ends the run):
#  1. set-up: .venv (requirements, kernels; the CUDA kernels too when nvcc is found);
#  2. the whole CPU suite in .venv, on RUBIKS_TEST_WORKERS xdist workers (default: the CPUs, at most
#     4); GPU tests skip themselves without a GPU; pytest lists the 15 slowest tests;
#  3. the kernels built by Bazel (scripts/bazel_build.sh), and the op tests marked `kernels` (every
#     FFI target, dtype and code path) against them;
#  4. where a Python 3.12 interpreter exists, a second small venv with the newest jax, and the
#     `kernels` op tests there, so FFI API drift shows up early.
# Extra arguments go to the suite's pytest (stage 2, or --quick's); a test path among them replaces
# the default `tests`.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
TESTS=(tests)  # what the suite runs, unless an argument names a test path
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then TESTS=(); break; fi
done
WORKERS=${RUBIKS_TEST_WORKERS:-$(python3 -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}
PYTEST=(-q -n "$WORKERS" --maxschedchunk=2 --durations=15)
KERNEL_TESTS=(-q -n "$WORKERS" -m kernels)  # what the further builds run (with their test paths)

SUMMARY=()
minutes() { awk -v s="$1" 'BEGIN { printf "%5.1f min", s / 60 }'; }
stage() {  # stage NAME COMMAND...: runs COMMAND (its commands joined by &&), records its minutes
  local name=$1 start=$SECONDS rc=0
  shift
  echo "[test] === $name ==="
  "$@" || rc=$?
  SUMMARY+=("$(printf '[test] %-46s' "$name") $(minutes $((SECONDS - start)))$(
    [ "$rc" = 0 ] || echo "  FAILED (exit $rc)")")
  return "$rc"
}
SUITE_LOG=$(mktemp)
suite() { .venv/bin/python -m pytest "${PYTEST[@]}" "$@" | tee "$SUITE_LOG"; }
finish() {  # the suite's 15 slowest tests again, then each stage's minutes
  awk '/slowest 15 durations/ { on = 1 } on && /^$/ { exit } on' "$SUITE_LOG"
  printf "%s\n" "${SUMMARY[@]}" "$(printf "[test] %-46s" total) $(minutes "$SECONDS")"
  rm -f "$SUITE_LOG"
}
trap finish EXIT

if [ "$QUICK" = 1 ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "[test] --quick needs an existing .venv: run 'bash scripts/setup.sh' once" >&2
    exit 2
  fi
  so=$(ls rubiks_jax/_rubiks_shift_cpu.*.so 2>/dev/null | head -n 1)
  if [ -z "$so" ] || [ -n "$(find xla_ops setup.py -newer "$so" -type f \
                              \( -name '*.cc' -o -name '*.cu' -o -name '*.h' -o -name setup.py \) |
                              head -n 1)" ]; then
    stage "rebuild the kernels (xla_ops/ changed)" \
      .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  fi
  stage "suite without the slow tests" suite -m "not slow" "${TESTS[@]}" "$@"
  exit 0
fi

stage "set-up (.venv)" bash scripts/setup.sh
stage "main suite" suite "${TESTS[@]}" "$@"

bazel_ops() {
  bash scripts/bazel_build.sh &&
  RUBIKS_JAX_KERNELS_DIR=bazel_out/kernels .venv/bin/python -m pytest "${KERNEL_TESTS[@]}" \
    tests/ops tests/bench
}
stage "Bazel build + kernel op tests" bazel_ops

py312=""
if command -v python3.12 >/dev/null 2>&1 && python3.12 -c "" 2>/dev/null; then
  py312=python3.12
elif PYENV_VERSION=3.12.1 python3.12 -c "" 2>/dev/null; then
  py312="$(PYENV_VERSION=3.12.1 python3.12 -c 'import sys; print(sys.executable)')"
fi
newest_jax_ops() {
  PYTHON="$py312" VENV=.venv-py312 REQUIREMENTS=requirements-ops.txt bash scripts/setup.sh &&
  .venv-py312/bin/python -m pytest "${KERNEL_TESTS[@]}" tests/ops
}
if [ -n "$py312" ]; then
  stage "$($py312 --version), newest jax: kernel op tests" newest_jax_ops
else
  echo "[test] no Python 3.12 interpreter: skipping the newest-jax op tests"
fi
