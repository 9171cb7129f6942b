#!/usr/bin/env bash
# The GPU check, in stages that fit a short GPU window (10 minutes per command at most, only the
# tail of the output and a few files come back), built so that it cannot pass without a GPU.
#
#   bash scripts/gpu_check.sh STAGE
#
#   preflight  GPU, driver and memory; jax and its devices; nvcc, static cudart, Python headers,
#              pybind11, setuptools, pytest; compute-sanitizer and ncu (warnings only: sanitize and
#              profile fail on their own when these are missing); the project's imports without
#              TensorFlow / ml_collections. Exits non-zero, saying "no GPU" where there is none.
#   build      the kernels in place (setup.py build_ext --inplace), for this GPU's SM only
#   test       the GPU tests with RUBIKS_REQUIRE_GPU=1 (a GPU test that skips fails, and so does a
#              session without a GPU or the CUDA kernels; tests/conftest.py), then tests/ops on the
#              CPU backend
#   sanitize   compute-sanitizer on scripts/gpu_smoke.py: memcheck and initcheck over all kernels
#              (XLA's platform allocator, so every buffer is its own allocation), racecheck and
#              synccheck over ours
#   bench      benchmark suites op, block, model f32, model bf16, as far as the time budget goes,
#              and their plots
#   profile    ncu on one forward and one backward call at the paper's shape (scripts/gpu_profile.py)
#   all        preflight, build, test, sanitize, profile, bench (stops after a failed preflight or
#              build)
#
# The stages after build use its in-place build and refuse to run on a missing or stale one (kernel
# sources, setup.py, interpreter or GPU changed since). Each stage has a time budget (GPU_CHECK_
# <STAGE>_S overrides it); `all` ends within GPU_CHECK_TOTAL_S (570 s). GPU_CHECK_BENCH_EXTRA adds
# options to every benchmark suite (--quick: a dry run of the stage).
#
# Output folder: $OUT if set, else bench_out/gpu/. It gets at most 8 files: summary.json (per-stage
# status, time and note, the benchmark JSONs, the profile rows; every stage updates it, so calls
# with the same folder accumulate), one <stage>.log per stage and gpu_figures.png. The summary
# table (at most 100 lines) is printed last. Scratch files go to $GPU_CHECK_SCRATCH
# (default /tmp/rubiks_gpu_check).
#
#   PYTHON=python3   interpreter whose jax has the CUDA plugin
#   .whl/*.whl       extra wheels (e.g. pytest, which GPU images may lack), installed into
#                    /tmp/rubiks_site when present
set -uo pipefail
# A relative $OUT is the caller's; every other path below is relative to the repository.
OUT_DIR=${OUT:+$(realpath -m -- "$OUT")}
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-$PWD/bench_out/gpu}
SCRATCH=${GPU_CHECK_SCRATCH:-${TMPDIR:-/tmp}/rubiks_gpu_check}
STAMP=build/gpu_check.stamp  # fingerprint of the last in-place build (build/ is git-ignored)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Seconds per stage; `all` also stops everything at TOTAL_S, under the 10-minute command limit.
declare -A BUDGET=([preflight]=60 [build]=300 [test]=330 [sanitize]=300 [bench]=420 [profile]=240)
TOTAL_S=${GPU_CHECK_TOTAL_S:-570}
# Benchmark suites: name, the seconds that must be left to start it, its arguments. The op suite is
# the one that matters (a failure or timeout fails the stage); the others run while time is left.
BENCH_SUITES=(
  "op|0|op"
  "block|90|block --repeats 20"
  "model|180|model --repeats 10"
  "model_bf16|180|model --dtype bfloat16 --repeats 10"
)
# compute-sanitizer tools and their kernel filters (kns= matches a substring of the mangled name;
# all our kernels live in namespace rubiks). initcheck, the slowest over all kernels, goes last.
SANITIZERS=("memcheck|" "racecheck|kns=rubiks" "synccheck|kns=rubiks" "initcheck|")
# XLA without its memory pool: every buffer its own cudaMalloc, nothing allocated ahead (sanitize,
# profile).
PLATFORM_ALLOCATOR=(XLA_PYTHON_CLIENT_ALLOCATOR=platform XLA_PYTHON_CLIENT_PREALLOCATE=false)
BENCH_EXTRA=${GPU_CHECK_BENCH_EXTRA:-}  # options added to every suite, e.g. --quick for a dry run

STAGE_LOG=/dev/null
STAGE_NOTE=""
STAGE_STATUS=""
STAGE_DEADLINE=0
CPU_PIDS=()
CPU_LOGS=()
CPU_OUTCOME=""
DEADLINE=$(( $(date +%s) + 100000 ))  # only `all` sets a total deadline

usage() {
  sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

# ------------------------------------------------------------------------------------------------
# Logging and bookkeeping
# ------------------------------------------------------------------------------------------------
say() { printf '%s\n' "$*" | tee -a "$STAGE_LOG"; }

fail() {  # fail MESSAGE: the stage's note; callers `return 1` after it
  STAGE_NOTE=$1
  say "FAILED: $1"
}

join() {  # join ITEMS...: "a, b, c"
  local out="" item
  for item in "$@"; do out+="${out:+, }$item"; done
  echo "$out"
}

trim() { local s=$1; s=${s%"${s##*[![:space:]]}"}; echo "${s#"${s%%[![:space:]]*}"}"; }

remaining() { echo $(( STAGE_DEADLINE - $(date +%s) )); }

log_mark() { wc -l < "$STAGE_LOG"; }
log_since() { tail -n "+$(( $1 + 1 ))" "$STAGE_LOG"; }

# run_logged SECONDS CMD...: runs CMD with its output on the terminal and in the stage log; returns
# its exit status, 124 when it ran out of time (timeout then kills its whole process group).
run_logged() {
  local limit=$1
  shift
  if (( limit < 5 )); then
    say "no time left for: $*"
    return 124
  fi
  say "\$ $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$STAGE_LOG"
  return "${PIPESTATUS[0]}"
}

summary() {  # summary ARGS...: scripts/gpu_summary.py (standard library only)
  local py=$PYTHON
  "$py" -c '' 2>/dev/null || py=python3
  "$py" scripts/gpu_summary.py "$@"
}

trim_log() {  # keeps a log under 1 MiB (its head and tail), so that it still comes back whole
  local log=$1 max=$(( 1024 * 1024 )) size
  size=$(stat -c %s "$log")
  (( size <= max )) && return 0
  { head -c 262144 "$log"; printf '\n... [%s bytes cut] ...\n' "$(( size - 917504 ))"
    tail -c 655360 "$log"; } > "$log.tmp" && mv "$log.tmp" "$log"
}

budget_of() {  # budget_of STAGE: seconds, GPU_CHECK_<STAGE>_S overriding the default
  local var="GPU_CHECK_${1^^}_S"
  echo "${!var:-${BUDGET[$1]}}"
}

run_stage() {  # run_stage NAME: stage_NAME under its budget, logged and recorded; its exit status
  local name=$1 start rc status seconds
  STAGE_LOG="$OUT_DIR/$name.log"
  : > "$STAGE_LOG"
  STAGE_NOTE=""
  STAGE_STATUS=""
  start=$(date +%s)
  STAGE_DEADLINE=$(( start + $(budget_of "$name") ))
  (( STAGE_DEADLINE > DEADLINE )) && STAGE_DEADLINE=$DEADLINE
  say "=== $name: started $(date -u +%H:%M:%S) UTC, budget $(( STAGE_DEADLINE - start )) s"
  "stage_$name"
  rc=$?
  status=${STAGE_STATUS:-ok}
  (( rc != 0 )) && status=FAILED
  seconds=$(( $(date +%s) - start ))
  say "=== $name: $status in $seconds s${STAGE_NOTE:+: $STAGE_NOTE}"
  trim_log "$STAGE_LOG"
  summary record "$OUT_DIR" "$name" "$status" "$seconds" --note "$STAGE_NOTE"
  STAGE_LOG=/dev/null
  return "$rc"
}

# ------------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------------
gpu_query() {  # gpu_query FIELDS: nvidia-smi CSV lines, non-zero without a GPU
  command -v nvidia-smi >/dev/null 2>&1 || return 1
  local lines
  lines=$(nvidia-smi --query-gpu="$1" --format=csv,noheader 2>/dev/null) || return 1
  [ -n "$lines" ] && printf '%s\n' "$lines"
}

no_gpu_reason() {
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "no GPU: nvidia-smi not found"
  else
    echo "no GPU: nvidia-smi lists none ($(nvidia-smi -L 2>&1 | head -1))"
  fi
}

require_gpu() {
  gpu_query name >/dev/null || { fail "$(no_gpu_reason)"; return 1; }
  wait_gpu_free
}

# A process that a stage's timeout killed can hold its GPU memory for a few seconds more; the next
# stage's process then fails to create its CUDA context (out of memory, seen once under memcheck).
wait_gpu_free() {  # waits up to 30 s for no compute process on the GPU; says so if one stays
  local i apps
  for (( i = 0; i < 30; i++ )); do
    apps=$(nvidia-smi --query-compute-apps=pid,process_name --format=csv,noheader 2>/dev/null)
    [ -z "$apps" ] && return 0
    sleep 1
  done
  say "warn: still on the GPU after 30 s: $(tr '\n' ' ' <<< "$apps")"
}

gpu_archs() {  # SM numbers of the GPUs present, "90" or "80;90" (compute_cap 9.0 -> 90)
  local caps
  caps=$(gpu_query compute_cap) || return 1
  caps=$(printf '%s\n' "$caps" | tr -d ' .' | sort -u | paste -sd ';')
  [[ $caps =~ ^[0-9]+(\;[0-9]+)*$ ]] && echo "$caps"
}

find_nvcc() {  # as setup.py finds it (xla_ops/toolkit.py: CUDA_HOME, CUDA_PATH, PATH)
  "$PYTHON" xla_ops/toolkit.py 2>/dev/null || python3 xla_ops/toolkit.py
}

find_tool() {  # find_tool NAME: PATH, beside nvcc, the CUDA toolkit, Nsight Compute installs
  local name=$1 nvcc dir
  command -v "$name" 2>/dev/null && return 0
  nvcc=$(find_nvcc 2>/dev/null)
  for dir in ${nvcc:+"$(dirname "$nvcc")"} "${CUDA_HOME:-/usr/local/cuda}/bin" \
      "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer" /usr/local/cuda/bin \
      /usr/local/cuda/compute-sanitizer /opt/nvidia/nsight-compute/*; do
    [ -x "$dir/$name" ] && { echo "$dir/$name"; return 0; }
  done
  return 1
}

cudart_static() {  # libcudart_static.a in the library directories nvcc reports (as setup.py does)
  local nvcc dir
  nvcc=$(find_nvcc) || return 1
  for dir in $("$nvcc" --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ LIBRARIES=//p' \
                 | grep -o -- '-L[^ "]*' | sed 's/^-L//' | grep -v stubs) \
             ${CUDA_HOME:+"$CUDA_HOME/lib64" "$CUDA_HOME/lib"}; do
    [ -f "$dir/libcudart_static.a" ] && { echo "$dir/libcudart_static.a"; return 0; }
  done
  return 1
}

# What the in-place build depends on: kernel sources, setup.py, the interpreter, the GPU's SMs.
build_fingerprint() {
  { find xla_ops -type f -print0 | sort -z | xargs -0 cat; cat setup.py; } | sha256sum | cut -d' ' -f1
  "$PYTHON" -c 'import sys; print(sys.implementation.cache_tag)'
  gpu_archs
}

cuda_kernels_load() {  # both compiled modules of this tree load under $PYTHON
  "$PYTHON" -c 'import sys, rubiks_jax.ops as o; sys.exit(0 if o.cuda_built() and o.ffi_available() else 1)' \
    >/dev/null 2>&1
}

require_build() {
  if [ ! -f "$STAMP" ]; then
    fail "no in-place CUDA build here ($STAMP missing): run 'bash scripts/gpu_check.sh build' first"
    return 1
  fi
  if [ "$(cat "$STAMP")" != "$(build_fingerprint)" ]; then
    fail "the in-place build is stale (xla_ops/, setup.py, interpreter or GPU changed since): run 'bash scripts/gpu_check.sh build' again"
    return 1
  fi
  if ! cuda_kernels_load; then
    fail "rubiks_jax.ops.cuda_built() is False with $PYTHON: run 'bash scripts/gpu_check.sh build' again"
    return 1
  fi
}

install_wheels() {  # extra wheels from .whl/ (GPU images have no package registry)
  compgen -G ".whl/*.whl" >/dev/null || return 0
  local site=/tmp/rubiks_site list
  list=$(ls .whl/*.whl)
  if [ "$(cat "$site/.wheels" 2>/dev/null)" != "$list" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$site" .whl/*.whl &&
      printf '%s\n' "$list" > "$site/.wheels"
  fi
  export PYTHONPATH="$PYTHONPATH:$site"
}

# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------
# Python side of the preflight: one line per item, "STATUS ITEM DETAIL"; MISSING and FAILED block.
PREFLIGHT_PY='
import glob, importlib, os, sys, sysconfig

def line(status, item, detail=""):
    print(f"{status:8s} {item:18s} {detail}", flush=True)

line("ok", "python", f"{sys.version.split()[0]} ({sys.executable})")
try:
    import jax
    line("ok", "jax", f"{jax.__version__}, jax.devices(): {jax.devices()}")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        line("ok", "jax GPU", f"{len(gpus)} x {gpus[0].device_kind}")
    else:
        line("MISSING", "jax GPU", "no GPU: jax lists no GPU device (CUDA plugin missing or failed)")
except Exception as err:
    line("MISSING", "jax", repr(err))
include = sysconfig.get_paths()["include"]
line("ok" if os.path.isfile(os.path.join(include, "Python.h")) else "MISSING", "Python.h", include)
for name, needed in (("pybind11", 1), ("setuptools", 1), ("pytest", 1), ("numpy", 1),
                     ("matplotlib", 0)):
    try:
        version = getattr(importlib.import_module(name), "__version__", "?")
        line("ok", name, version)
    except Exception as err:
        line("MISSING" if needed else "warn", name,
             repr(err) + ("" if needed else " (bench plots are skipped)"))
# GPU machines have no TensorFlow, tensorflow-datasets or ml_collections: what the check runs
# must import without them.
heavy = ("tensorflow", "tensorflow_datasets", "ml_collections")
modules = ["rubiks_jax.ops", "rubiks_jax.bench.__main__", "rubiks_jax.bench.plots",
           "tests.conftest", "tests.test_gpu_guard"]
modules += ["tests.ops." + os.path.basename(p)[:-3] for p in sorted(glob.glob("tests/ops/test_*.py"))]
try:
    for m in modules:
        importlib.import_module(m)
    loaded = sorted({k.split(".")[0] for k, v in sys.modules.items()
                     if v is not None and k.split(".")[0] in heavy})
    import rubiks_jax
    if loaded:
        line("FAILED", "project imports", "these pull in " + ", ".join(loaded))
    else:
        line("ok", "project imports", f"{len(modules)} modules, rubiks_jax from "
             f"{os.path.dirname(rubiks_jax.__file__)}")
except Exception as err:
    line("FAILED", "project imports", f"{m}: {err!r}")
'

stage_preflight() {
  local problems=() gpu="" nvcc tool path line probe
  if gpu=$(gpu_query name,driver_version,memory.total,compute_cap); then
    while IFS= read -r line; do say "ok       GPU                $line"; done <<< "$gpu"
  else
    say "MISSING  GPU                $(no_gpu_reason)"
    problems+=("$(no_gpu_reason)")
  fi
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "MISSING  python             $PYTHON not found (set PYTHON)"
    fail "python interpreter $PYTHON not found"
    return 1
  fi
  probe=$(timeout 120 "$PYTHON" -c "$PREFLIGHT_PY" 2>&1)
  while IFS= read -r line; do
    say "$line"
    case $line in
      MISSING*"no GPU"*) problems+=("no GPU in jax") ;;
      MISSING*) problems+=("$(trim "${line:9:18}") missing") ;;
      FAILED*) problems+=("$(trim "${line:9:18}") failed") ;;
    esac
  done < <(grep -E '^(ok|MISSING|FAILED|warn) ' <<< "$probe")
  if ! grep -q '^[a-zA-Z]* *project imports' <<< "$probe"; then  # the probe died on the way
    say "FAILED   python probe       stopped early; its last output:"
    tail -20 <<< "$probe" | tee -a "$STAGE_LOG"
    problems+=("python probe failed")
  fi
  if nvcc=$(find_nvcc); then
    say "ok       nvcc               $("$nvcc" --version | tail -1) ($nvcc)"
    if path=$(cudart_static); then
      say "ok       cudart static      $path"
    else
      say "MISSING  cudart static      libcudart_static.a not found in nvcc's library directories"
      problems+=("libcudart_static.a missing")
    fi
  else
    say "MISSING  nvcc               not found (set CUDA_HOME or PATH)"
    problems+=("nvcc missing")
  fi
  for tool in compute-sanitizer ncu; do
    if path=$(find_tool "$tool"); then
      say "ok       $(printf '%-18s' "$tool") $path"
    else
      say "warn     $(printf '%-18s' "$tool") not found: the $([ "$tool" = ncu ] && echo profile || echo sanitize) stage will fail"
    fi
  done
  if grep -qs '^RmProfilingAdminOnly: 1' /proc/driver/nvidia/params && [ "$(id -u)" != 0 ]; then
    say "warn     GPU counters       admin only (RmProfilingAdminOnly=1): ncu will fail"
  fi
  [ -n "$gpu" ] && summary set "$OUT_DIR" machine \
    "$(head -1 <<< "$gpu") | $("$PYTHON" -c 'import jax, sys; print("jax", jax.__version__, "| Python", sys.version.split()[0])' 2>/dev/null)"
  if (( ${#problems[@]} )); then
    fail "$(join "${problems[@]}")"
    return 1
  fi
  STAGE_NOTE="$(head -1 <<< "$gpu")"
}

stage_build() {
  require_gpu || return 1
  local archs nvcc
  nvcc=$(find_nvcc) || { fail "nvcc not found (set CUDA_HOME or PATH)"; return 1; }
  archs=$(gpu_archs) || { fail "could not read the GPU's compute capability from nvidia-smi"; return 1; }
  cudart_static >/dev/null || { fail "libcudart_static.a not found next to nvcc's libraries"; return 1; }
  say "building for sm_${archs//;/ sm_} with $("$nvcc" --version | tail -1)"
  rm -f "$STAMP"
  # --force: the copied tree's modification times say nothing about what changed since the last
  # build (headers are not dependencies to setuptools either), so everything is rebuilt.
  if ! run_logged "$(remaining)" env RUBIKS_JAX_CUDA=1 RUBIKS_JAX_CUDA_ARCHS="$archs" \
      "$PYTHON" setup.py -q build_ext --inplace --force --parallel 4; then
    fail "the build failed (build.log)"
    return 1
  fi
  if ! cuda_kernels_load; then
    fail "built, but rubiks_jax.ops.cuda_built() is False"
    return 1
  fi
  mkdir -p "$(dirname "$STAMP")"
  build_fingerprint > "$STAMP"
  local built=(rubiks_jax/_rubiks_shift_cuda*.so)
  STAGE_NOTE="sm_${archs//;/ sm_}: $(join "${built[@]##*/}")"
}

pytest_outcome() {  # pytest_outcome < OUTPUT: pytest's final counts line (or why it stopped)
  local result
  result=$(grep -E '[0-9]+ (passed|failed|errors?|skipped)|no tests ran|^Exit: ' | tail -1 \
           | sed -E 's/={2,}//g; s/^ +| +$//g; s/ in [0-9.]+s.*//')
  echo "${result:-no result}"
}

start_cpu_op_tests() {  # one pytest per tests/ops file in the background; sets CPU_PIDS, CPU_LOGS
  local file log limit
  limit=$(remaining)
  (( limit < 5 )) && limit=5
  CPU_PIDS=()
  CPU_LOGS=()
  mkdir -p "$SCRATCH/cpu_ops"
  for file in tests/ops/test_*.py; do
    [[ $file == *_gpu.py ]] && continue
    log="$SCRATCH/cpu_ops/$(basename "$file" .py).log"
    env -u RUBIKS_REQUIRE_GPU JAX_PLATFORMS=cpu timeout -k 10 "$limit" \
      "$PYTHON" -m pytest -q -rfE -p no:cacheprovider -m "not gpu" "$file" > "$log" 2>&1 &
    CPU_PIDS+=($!)
    CPU_LOGS+=("$log")
  done
}

finish_cpu_op_tests() {  # waits for them, copies their output into the log; sets CPU_OUTCOME
  local i rc outcome bad=()
  declare -A total=()
  for i in "${!CPU_PIDS[@]}"; do
    wait "${CPU_PIDS[$i]}"
    rc=$?
    say "--- ${CPU_LOGS[$i]##*/} (exit status $rc)"
    tee -a "$STAGE_LOG" < "${CPU_LOGS[$i]}" | tail -5
    outcome=$(pytest_outcome < "${CPU_LOGS[$i]}")
    (( rc == 124 )) && outcome="timeout"
    (( rc != 0 )) && bad+=("$(basename "${CPU_LOGS[$i]}" .log) $outcome")
    while read -r n kind; do
      total[$kind]=$(( ${total[$kind]:-0} + n ))
    done < <(grep -oE '[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed)' <<< "$outcome")
  done
  outcome=""
  for i in passed failed error errors skipped xfailed; do
    [ -n "${total[$i]:-}" ] && outcome+="${outcome:+, }${total[$i]} $i"
  done
  CPU_OUTCOME=${outcome:-no result}
  (( ${#bad[@]} == 0 )) && return 0
  CPU_OUTCOME+="; FAILED: $(join "${bad[@]}")"
  return 1
}

stage_test() {
  require_gpu && require_build || return 1
  local mark gpu_rc cpu_rc gpu
  # The op tests on the CPU backend (the CPU kernels of this build under this jax) run on the
  # CPU cores in the background while the GPU tests run.
  start_cpu_op_tests
  mark=$(log_mark)
  run_logged "$(remaining)" env RUBIKS_REQUIRE_GPU=1 "$PYTHON" -m pytest -q -rfEs \
    -p no:cacheprovider tests/ops/test_rubiks_shift_gpu.py tests/test_gpu_guard.py
  gpu_rc=$?
  gpu=$(log_since "$mark" | pytest_outcome)
  (( gpu_rc == 124 )) && gpu="timeout after $gpu"
  say "=== cpu op tests (JAX_PLATFORMS=cpu, one process per file)"
  finish_cpu_op_tests
  cpu_rc=$?
  STAGE_NOTE="gpu: $gpu; cpu ops: $CPU_OUTCOME"
  (( gpu_rc == 0 && cpu_rc == 0 ))
}

stage_sanitize() {
  require_gpu && require_build || return 1
  local sanitizer spec tool filter mark rc errors notes=() failed=0
  sanitizer=$(find_tool compute-sanitizer) || { fail "compute-sanitizer not found"; return 1; }
  for spec in "${SANITIZERS[@]}"; do
    tool=${spec%%|*}
    filter=()
    [ -n "${spec#*|}" ] && filter=(--kernel-name "${spec#*|}")
    mark=$(log_mark)
    # The platform allocator gives every XLA buffer its own cudaMalloc, so an access past one is
    # out of bounds for the tool (inside XLA's pool it would land in a neighbour).
    run_logged "$(remaining)" env "${PLATFORM_ALLOCATOR[@]}" "$sanitizer" --tool "$tool" "${filter[@]}" \
      --error-exitcode 1 --print-limit 20 --target-processes application-only \
      "$PYTHON" scripts/gpu_smoke.py
    rc=$?
    # racecheck ends with "RACECHECK SUMMARY: N hazards displayed", the others "ERROR SUMMARY: N errors"
    errors=$(log_since "$mark" | grep -oE '(ERROR SUMMARY: [0-9,]+ error|RACECHECK SUMMARY: [0-9,]+ hazard)' \
             | tail -1 | grep -oE '[0-9,]+')
    if (( rc == 124 )); then
      notes+=("$tool timeout")
    else
      notes+=("$tool ${errors:-?}$( (( rc != 0 )) && echo " (exit $rc)")")
    fi
    (( rc != 0 )) && failed=1
  done
  STAGE_NOTE="errors: $(join "${notes[@]}")"
  (( failed == 0 ))
}

stage_bench() {
  require_gpu && require_build || return 1
  local entry name min args json rc failed=0 partial=0 notes=() figures=()
  rm -rf "$SCRATCH/bench" "$SCRATCH/figures" "$OUT_DIR/gpu_figures.png"
  mkdir -p "$SCRATCH/bench"
  summary drop "$OUT_DIR" bench  # no results of an earlier run beside this one's
  for entry in "${BENCH_SUITES[@]}"; do
    IFS='|' read -r name min args <<< "$entry"
    json="$SCRATCH/bench/$name.json"
    if (( $(remaining) < min )); then
      notes+=("$name skipped (time)")
      partial=1
      continue
    fi
    # shellcheck disable=SC2086  # args holds the suite and its options, split on purpose
    run_logged "$(remaining)" "$PYTHON" -m rubiks_jax.bench $args $BENCH_EXTRA --json "$json"
    rc=$?
    if (( rc == 0 )); then
      notes+=("$name ok")
      summary attach "$OUT_DIR" bench "$json" --name "$name"
    elif (( rc == 124 )); then
      notes+=("$name timeout")
      if [ "$name" = op ]; then failed=1; else partial=1; fi
    else
      notes+=("$name FAILED")
      failed=1
    fi
  done
  if [ -f "$SCRATCH/bench/block.json" ] || [ -f "$SCRATCH/bench/model.json" ]; then
    if (( $(remaining) < 20 )); then
      notes+=("plots skipped (time)")
      partial=1
    elif "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
      args=()
      [ -f "$SCRATCH/bench/block.json" ] && args+=(--block "$SCRATCH/bench/block.json")
      [ -f "$SCRATCH/bench/model.json" ] && args+=(--model "$SCRATCH/bench/model.json")
      # Figures go to scratch, then into one PNG: the output folder holds at most 8 files.
      if run_logged "$(remaining)" "$PYTHON" -m rubiks_jax.bench.plots --out "$SCRATCH/figures" \
          --prefix gpu_ "${args[@]}"; then
        figures=("$SCRATCH"/figures/gpu_*.png)  # the layer-level figure is machine-independent
        if [ -f "${figures[0]}" ] && summary stack-png "$OUT_DIR/gpu_figures.png" "${figures[@]}"; then
          notes+=("plots ok")
        else
          notes+=("plots FAILED")
          failed=1
        fi
      else
        notes+=("plots FAILED")
        failed=1
      fi
    else
      notes+=("plots skipped (no matplotlib)")
    fi
  fi
  STAGE_NOTE=$(join "${notes[@]}")
  (( partial )) && STAGE_STATUS=partial
  (( failed == 0 ))
}

stage_profile() {
  require_gpu && require_build || return 1
  local ncu csv="$SCRATCH/profile.csv" rc
  ncu=$(find_tool ncu) || { fail "ncu (Nsight Compute) not found"; return 1; }
  mkdir -p "$SCRATCH" && rm -f "$csv" "$SCRATCH/profile.json"
  summary drop "$OUT_DIR" profile
  # Only kernels whose demangled name holds "rubiks" (our namespace); the workload launches
  # nothing of ours before the two profiled calls, so no --launch-skip is needed.
  # PLATFORM_ALLOCATOR: ncu's kernel replay saves and restores the device memory a kernel may
  # write, and XLA's default pool (75% of the GPU) made one pass of the first profile outlast a
  # 90-s budget.
  run_logged "$(remaining)" env "${PLATFORM_ALLOCATOR[@]}" "$ncu" --target-processes application-only \
    --kernel-name-base demangled --kernel-name regex:rubiks --launch-count 16 \
    --metrics "$("$PYTHON" scripts/gpu_profile.py metrics)" --csv --print-units base \
    --log-file "$csv" "$PYTHON" scripts/gpu_profile.py run
  rc=$?
  [ -f "$csv" ] && grep '^==' "$csv" | head -40 | tee -a "$STAGE_LOG"
  if grep -qs ERR_NVGPUCTRPERM "$csv"; then
    fail "GPU performance counters are not permitted here (ERR_NVGPUCTRPERM)"
    return 1
  fi
  if (( rc != 0 )); then
    fail "ncu or the workload failed (exit status $rc)"
    return 1
  fi
  if ! run_logged 60 "$PYTHON" scripts/gpu_profile.py table "$csv" --json "$SCRATCH/profile.json"
  then
    fail "no profile table"
    return 1
  fi
  summary attach "$OUT_DIR" profile "$SCRATCH/profile.json"
  STAGE_NOTE="$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["launches"]))' \
    "$SCRATCH/profile.json") launches profiled (table in profile.log)"
}

run_all() {
  DEADLINE=$(( $(date +%s) + TOTAL_S ))
  local rc=0
  run_stage preflight || return 1
  run_stage build || return 1
  run_stage test || rc=1
  run_stage sanitize || rc=1
  run_stage profile || rc=1  # 6-8 s on an H200: before the suites, which take what time is left
  run_stage bench || rc=1
  return "$rc"
}

main() {
  local stage=${1:-} rc
  case $stage in
    preflight|build|test|sanitize|bench|profile|all) ;;
    -h|--help|help) usage; return 0 ;;
    *) usage >&2; echo "gpu_check.sh: give a stage" >&2; return 2 ;;
  esac
  mkdir -p "$OUT_DIR" "$SCRATCH" || return 2
  install_wheels
  if [ "$stage" = all ]; then
    run_all
  else
    run_stage "$stage"
  fi
  rc=$?
  echo
  summary print "$OUT_DIR"
  return "$rc"
}

# Sourcing the file (tests do) defines the functions without running a stage.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
