#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and jax's CUDA plugin already installed:
#  1. builds the kernels in place with CUDA (against this environment's jaxlib),
#  2. runs the GPU tests (CUDA vs the float64 reference and the CPU kernels, gradients, bf16/f16,
#     determinism, jit/vmap/pmap) and the CPU op tests,
#  3. compute-sanitizer memcheck and racecheck on a small case,
#  4. the benchmark suites (op, block, model in float32 and bfloat16) and their plots,
# and prints a summary table last. Logs and JSON go to $OUT (or bench_out/).
#
#   PYTHON=python3   interpreter whose jax has the CUDA plugin
#   Extra wheels (e.g. pytest, which GPU images may lack) are installed from .whl/ when present.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-bench_out}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
declare -a NAMES STATUS

step() {  # step NAME COMMAND...: runs it, logs to $OUT_DIR/NAME.log, records pass/fail
  local name=$1; shift
  echo "=== $name: $*"
  if "$@" 2>&1 | tee "$OUT_DIR/$name.log"; then STATUS+=("ok"); else STATUS+=("FAILED"); fi
  NAMES+=("$name")
}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/rubiks_site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/rubiks_site"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT_DIR/gpu.txt"
nvcc --version | tail -2 | tee -a "$OUT_DIR/gpu.txt"

step build env RUBIKS_JAX_CUDA=1 "$PYTHON" setup.py -q build_ext --inplace
step gpu_tests "$PYTHON" -m pytest -q -rs tests/ops/test_rubiks_shift_gpu.py
step cpu_op_tests "$PYTHON" -m pytest -q -x tests/ops/test_rubiks_shift.py -k "not half_precision"
if command -v compute-sanitizer >/dev/null 2>&1; then
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$PYTHON" scripts/gpu_smoke.py
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$PYTHON" scripts/gpu_smoke.py
  unset XLA_PYTHON_CLIENT_PREALLOCATE
else
  NAMES+=("sanitizer"); STATUS+=("not found")
fi
for suite in op block model; do
  step "bench_$suite" "$PYTHON" -m rubiks_jax.bench "$suite" --json "$OUT_DIR/bench_$suite.json"
done
step bench_model_bf16 "$PYTHON" -m rubiks_jax.bench model --dtype bfloat16 \
  --json "$OUT_DIR/bench_model_bf16.json"
if "$PYTHON" -c "import matplotlib" 2>/dev/null; then
  step plots "$PYTHON" -m rubiks_jax.bench.plots --out "$OUT_DIR/figures" --prefix gpu_ \
    --block "$OUT_DIR/bench_block.json" --model "$OUT_DIR/bench_model.json"
else
  NAMES+=("plots"); STATUS+=("no matplotlib")
fi

echo
echo "=== GPU check summary ($(head -1 "$OUT_DIR/gpu.txt"))"
printf '%-16s %s\n' step result
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-16s %s\n' "${NAMES[$i]}" "${STATUS[$i]}"
  [ "${STATUS[$i]}" = "FAILED" ] && failed=1
done
for suite in op block model model_bf16; do
  [ -f "$OUT_DIR/bench_$suite.log" ] && grep -A40 "benchmark on" "$OUT_DIR/bench_$suite.log" | grep -v "^wrote"
done
exit $failed
