#!/usr/bin/env bash
# sh_test driver of xla_ops/tests/extensions_test.py: $1 is the Python of the environment the
# extensions were built against (@python_env//:defs.bzl PYTHON); runs from the runfiles root.
set -euo pipefail
PYTHON="$1"
cd "${TEST_SRCDIR}/${TEST_WORKSPACE}"
exec "$PYTHON" xla_ops/tests/extensions_test.py xla_ops
