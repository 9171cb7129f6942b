"""The GPU check, in one call that fits a short GPU window (at most 8 minutes; only the tail of the
output and 8 files come back), built so that it cannot pass without a GPU.

    python tools/gpu_check.py [STAGE ...] [--out DIR] [--total SECONDS]

Stages, run in this order (default: all; `all` names them all):
  preflight  GPU, driver and memory; jax and its devices; nvcc and static cudart, Python headers,
             pybind11, setuptools, pytest; compute-sanitizer and ncu (warnings: sanitize and profile
             fail on their own without them); the project's imports without TensorFlow or
             ml_collections. Fails, saying "no GPU", where there is none; then nothing else runs.
  build      the kernels in place (setup.py build_ext --inplace --force) for this GPU's SMs
  test       the GPU tests with RUBIKS_REQUIRE_GPU=1 (a GPU test that skips fails, and so does a
             session without a GPU or the CUDA kernels), once with the v3 interpolation kernels and
             once with v4 (RUBIKS_JAX_CUDA_KERNELS); the host emulation tests on the CPU meanwhile
  sanitize   compute-sanitizer memcheck, racecheck, synccheck and initcheck on tools/gpu_smoke.py
             with the v4 kernels (XLA's platform allocator: every buffer its own allocation)
  profile    ncu on one forward and one backward call at the paper's shape with the v4 kernels
             (tools/gpu_profile.py)
  bench      the op suite with the v3 and the v4 kernels and pure XLA side by side (the "op A/B"
             table), then the block and model suites and their figures while time is left
The stages after build need its in-place build (they check that the CUDA kernels load). Each stage
has a time budget within the call's total (--total, default 480 s).

Output folder (--out, default $OUT, else bench_out/gpu): at most 8 files: summary.json (per stage:
status, seconds, note; the suites' JSON; the profile's rows), one <stage>.log per stage (every
command's output) and gpu_figures.png. The terminal gets one line per stage and, last, the summary
table of at most 100 lines (tools/gpu_summary.py). Scratch files: $GPU_CHECK_SCRATCH (default
/tmp/rubiks_gpu_check). PYTHON: the interpreter whose jax has the CUDA plugin (default: this one).
Extra wheels in .whl/ (GPU images have no package registry) are installed into /tmp/rubiks_site.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: tools/ is then sys.path[0], not the repository
    sys.path.insert(0, str(REPO))

from tools import gpu_profile, gpu_summary  # noqa: E402

STAGES = gpu_summary.STAGES  # preflight, build, test, sanitize, profile, bench
BUDGET_S = {"preflight": 60, "build": 150, "test": 200, "sanitize": 120, "profile": 60,
            "bench": 300}
TOTAL_S = 480
# compute-sanitizer tools and their kernel filters (kns= matches a substring of the mangled name;
# all our kernels live in namespace rubiks). initcheck, the slowest over all kernels, goes last.
SANITIZERS = (("memcheck", None), ("racecheck", "kns=rubiks"), ("synccheck", "kns=rubiks"),
              ("initcheck", None))
# XLA without its memory pool: every buffer its own cudaMalloc, nothing allocated ahead (sanitize:
# an access past a buffer is then out of bounds; profile: ncu's replay saves less memory).
PLATFORM_ALLOCATOR = {"XLA_PYTHON_CLIENT_ALLOCATOR": "platform",
                      "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
GPU_TESTS = ("tests/ops/test_rubiks_shift_gpu.py", "tests/test_gpu_guard.py")
# Suites after the op A/B: (name, seconds that must be left to start it, arguments).
MORE_SUITES = (("block", 60, ["block", "--repeats", "10"]),
               ("model", 90, ["model", "--repeats", "5"]))
HEAVY = ("tensorflow", "tensorflow_datasets", "ml_collections")


class Failed(Exception):
    """A stage failed; the message is its note."""


@dataclasses.dataclass
class Running:
    """A command Check.start started: its process, output file and deadline (time.monotonic)."""

    proc: subprocess.Popen
    out_file: object
    until: float


@dataclasses.dataclass
class Check:
    out: Path
    scratch: Path
    python: str
    deadline: float  # of the whole call (time.monotonic)
    stage_deadline: float = 0.0
    log_path: Path | None = None
    partial: bool = False

    def say(self, text: str, echo: bool = True) -> None:
        if echo:
            print(text, flush=True)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(text + "\n")

    def remaining(self) -> float:
        return min(self.stage_deadline, self.deadline) - time.monotonic()

    def start(self, cmd: list[str], env: dict | None = None,
              limit: float | None = None) -> Running | None:
        """Starts cmd from the repository, its output to a scratch file, to end within `limit`
        seconds (default: the stage's time left); None when there is no time left for it."""
        limit = self.remaining() if limit is None else min(limit, self.remaining())
        self.say(f"$ {' '.join(cmd)}", echo=False)
        if limit < 5:
            self.say(f"no time left for: {' '.join(cmd)}")
            return None
        out_file = open(self.scratch / f"cmd_{time.monotonic_ns()}.txt", "w+")
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, text=True,
                                stdout=out_file, stderr=subprocess.STDOUT, start_new_session=True)
        return Running(proc, out_file, time.monotonic() + limit)

    def finish(self, running: Running | None) -> tuple[int, str]:
        """Waits for a started command; (exit status, output) with the output in the stage log,
        124 when it ran out of time (its whole process group is then killed) or never started."""
        if running is None:
            return 124, ""
        proc, out_file = running.proc, running.out_file
        try:
            rc = proc.wait(timeout=max(1.0, running.until - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
        out_file.seek(0)
        output = out_file.read()
        out_file.close()
        os.unlink(out_file.name)
        self.say(output.rstrip("\n"), echo=False)
        self.say(f"(exit status {rc})", echo=False)
        return rc, output

    def run(self, cmd: list[str], env: dict | None = None,
            limit: float | None = None) -> tuple[int, str]:
        """start, then finish: (exit status, output)."""
        return self.finish(self.start(cmd, env, limit))


# ------------------------------------------------------------------------------------------------
# The machine
# ------------------------------------------------------------------------------------------------
def gpu_query(fields: str) -> list[str] | None:
    """nvidia-smi CSV lines, or None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                          capture_output=True, text=True)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines if done.returncode == 0 and lines else None


def no_gpu_reason() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU: nvidia-smi not found"
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return f"no GPU: nvidia-smi lists none ({(listing.stdout + listing.stderr).strip()[:80]})"


def require_gpu() -> None:
    if gpu_query("name") is None:
        raise Failed(no_gpu_reason())
    for _ in range(30):  # a killed process can hold the GPU's memory for a few seconds more
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
        if not apps:
            return
        time.sleep(1)


def gpu_archs() -> str:
    """SM numbers of the GPUs present: "90" or "80;90"."""
    caps = gpu_query("compute_cap") or []
    archs = sorted({c.replace(".", "").strip() for c in caps})
    if not archs or not all(a.isdigit() for a in archs):
        raise Failed("could not read the GPU's compute capability from nvidia-smi")
    return ";".join(archs)


def toolkit():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rubiks_toolkit", REPO / "xla_ops" / "toolkit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_tool(name: str) -> str | None:
    """PATH, beside nvcc, the CUDA toolkit, Nsight Compute installs."""
    if found := shutil.which(name):
        return found
    nvcc = toolkit().find_nvcc()
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    dirs = ([os.path.dirname(nvcc)] if nvcc else []) + [
        f"{home}/bin", f"{home}/compute-sanitizer", "/usr/local/cuda/bin",
        "/usr/local/cuda/compute-sanitizer", *sorted(glob.glob("/opt/nvidia/nsight-compute/*"))]
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def cudart_static() -> str | None:
    nvcc = toolkit().find_nvcc()
    if nvcc is None:
        return None
    for d in toolkit().toolkit(nvcc).libs:
        if os.path.isfile(os.path.join(d, "libcudart_static.a")):
            return os.path.join(d, "libcudart_static.a")
    return None


def require_build(check: Check) -> None:
    probe = ("import sys, rubiks_jax.ops as o; "
             "sys.exit(0 if o.cuda_built() and o.ffi_available() else 1)")
    if subprocess.run([check.python, "-c", probe], cwd=REPO, capture_output=True).returncode:
        raise Failed(f"the CUDA kernels do not load with {check.python}: run the build stage "
                     "(python tools/gpu_check.py build)")


def pytest_outcome(output: str) -> str:
    """pytest's final counts line, or why it stopped."""
    found = re.findall(r"^.*\d+ (?:passed|failed|errors?|skipped).*$|^.*no tests ran.*$", output,
                       re.M)
    if not found:
        return "no result"
    return re.sub(r" in [0-9.]+s.*", "", found[-1].strip("= "))


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------
PREFLIGHT_PY = f"""
import glob, importlib, os, sys, sysconfig

def line(status, item, detail=""):
    print(f"{{status:8s}} {{item:18s}} {{detail}}", flush=True)

line("ok", "python", f"{{sys.version.split()[0]}} ({{sys.executable}})")
try:
    import jax
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    line("ok" if gpus else "MISSING", "jax GPU", f"jax {{jax.__version__}}: " + (
        f"{{len(gpus)}} x {{gpus[0].device_kind}}" if gpus
        else "no GPU: jax lists no GPU device (CUDA plugin missing or failed)"))
except Exception as err:
    line("MISSING", "jax", repr(err))
include = sysconfig.get_paths()["include"]
line("ok" if os.path.isfile(os.path.join(include, "Python.h")) else "MISSING", "Python.h", include)
for name, needed in (("pybind11", 1), ("setuptools", 1), ("pytest", 1), ("numpy", 1),
                     ("matplotlib", 0)):
    try:
        line("ok", name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as err:
        line("MISSING" if needed else "warn", name, repr(err))
modules = ["rubiks_jax.ops", "rubiks_jax.bench.__main__", "rubiks_jax.bench.plots",
           "tests.conftest", "tests.test_gpu_guard", "tools.gpu_profile", "tools.gpu_smoke"]
modules += ["tests.ops." + os.path.basename(p)[:-3] for p in sorted(glob.glob("tests/ops/test_*.py"))]
try:
    for m in modules:
        importlib.import_module(m)
    loaded = sorted({{k.split(".")[0] for k in sys.modules}} & set({HEAVY!r}))
    line("FAILED" if loaded else "ok", "project imports",
         ("these pull in " + ", ".join(loaded)) if loaded else f"{{len(modules)}} modules")
except Exception as err:
    line("FAILED", "project imports", f"{{m}}: {{err!r}}")
"""


def stage_preflight(check: Check) -> str:
    problems = []
    gpu = gpu_query("name,driver_version,memory.total,compute_cap")
    if gpu is None:
        problems.append(no_gpu_reason())
        check.say(f"MISSING  GPU                {no_gpu_reason()}")
    else:
        for line in gpu:
            check.say(f"ok       GPU                {line}")
    if shutil.which(check.python) is None and not os.path.isfile(check.python):
        raise Failed(f"python interpreter {check.python} not found (set PYTHON)")
    rc, output = check.run([check.python, "-c", PREFLIGHT_PY], env={"PYTHONPATH": str(REPO)},
                           limit=120)
    for line in output.splitlines():
        if re.match(r"^(ok|MISSING|FAILED|warn) ", line):
            check.say(line)
            if line.startswith(("MISSING", "FAILED")):
                item = line[9:27].strip()
                problems.append("no GPU in jax" if "no GPU" in line else f"{item} "
                                f"{'missing' if line.startswith('MISSING') else 'failed'}")
    if "project imports" not in output:
        problems.append("python probe failed")
    nvcc = toolkit().find_nvcc()
    check.say(f"{'ok' if nvcc else 'MISSING':8s} nvcc               {nvcc or 'not found'}")
    if nvcc is None:
        problems.append("nvcc missing")
    elif cudart_static() is None:
        problems.append("libcudart_static.a missing")
    for tool in ("compute-sanitizer", "ncu"):
        path = find_tool(tool)
        check.say(f"{'ok' if path else 'warn':8s} {tool:18s} {path or 'not found'}")
    if gpu is not None:
        data = gpu_summary.load(str(check.out))
        data["machine"] = gpu[0]
        gpu_summary.save(str(check.out), data)
    if problems:
        raise Failed(", ".join(dict.fromkeys(problems)))
    return gpu[0]


def stage_build(check: Check) -> str:
    require_gpu()
    archs = gpu_archs()
    if toolkit().find_nvcc() is None or cudart_static() is None:
        raise Failed("nvcc or libcudart_static.a not found (set CUDA_HOME or PATH)")
    # --force: a copied tree's modification times say nothing about what changed since the last
    # build (headers are not dependencies to setuptools either), so everything is rebuilt.
    rc, _ = check.run([check.python, "setup.py", "-q", "build_ext", "--inplace", "--force",
                       "--parallel", "4"],
                      env={"RUBIKS_JAX_CUDA": "1", "RUBIKS_JAX_CUDA_ARCHS": archs})
    if rc:
        raise Failed(f"the build failed (exit status {rc}; build.log)")
    require_build(check)
    return f"sm_{archs.replace(';', ' sm_')}"


def stage_test(check: Check) -> str:
    require_gpu()
    require_build(check)
    # The host emulation of both versions (CPU) runs on the CPU cores meanwhile.
    emulation = check.start([check.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/ops/test_cuda_emulation.py"],
                            env={"JAX_PLATFORMS": "cpu", "RUBIKS_REQUIRE_GPU": "0"})
    notes, failed = [], False
    for version in ("v3", "v4"):
        rc, output = check.run([check.python, "-m", "pytest", "-q", "-rfEs", "-p",
                                "no:cacheprovider", *GPU_TESTS],
                               env={"RUBIKS_REQUIRE_GPU": "1", "RUBIKS_JAX_CUDA_KERNELS": version})
        notes.append(f"gpu {version}: " + ("timeout" if rc == 124 else pytest_outcome(output)))
        failed |= rc != 0
    rc, output = check.finish(emulation)
    notes.append("emulation: " + ("timeout" if rc == 124 else pytest_outcome(output)))
    failed |= rc != 0
    if failed:
        raise Failed("; ".join(notes))
    return "; ".join(notes)


def require_gpu_build_and_tool(check: Check, tool: str, what: str) -> str:
    """A stage's preconditions: a GPU, the in-place build and `tool` (named `what`); its path."""
    require_gpu()
    require_build(check)
    path = find_tool(tool)
    if path is None:
        raise Failed(f"{what} not found")
    return path


def stage_sanitize(check: Check) -> str:
    sanitizer = require_gpu_build_and_tool(check, "compute-sanitizer", "compute-sanitizer")
    notes, failed = [], False
    for tool, kernels in SANITIZERS:
        cmd = [sanitizer, "--tool", tool, *(["--kernel-name", kernels] if kernels else []),
               "--error-exitcode", "1", "--print-limit", "20", "--target-processes",
               "application-only", check.python, "tools/gpu_smoke.py"]
        rc, output = check.run(cmd, env={**PLATFORM_ALLOCATOR, "RUBIKS_JAX_CUDA_KERNELS": "v4"})
        # racecheck ends with "RACECHECK SUMMARY: N hazards displayed", the others "ERROR SUMMARY"
        counts = re.findall(r"(?:ERROR SUMMARY: ([\d,]+) error|RACECHECK SUMMARY: ([\d,]+) hazard)",
                            output)
        errors = next((a or b for a, b in reversed(counts)), "?")
        notes.append(f"{tool} timeout" if rc == 124 else
                     f"{tool} {errors}" + (f" (exit {rc})" if rc else ""))
        failed |= rc != 0
    note = "v4, errors: " + ", ".join(notes)
    if failed:
        raise Failed(note)
    return note


def stage_profile(check: Check) -> str:
    ncu = require_gpu_build_and_tool(check, "ncu", "ncu (Nsight Compute)")
    csv_path, json_path = check.scratch / "profile.csv", check.scratch / "profile.json"
    for p in (csv_path, json_path):
        p.unlink(missing_ok=True)
    # Only our kernels (namespace rubiks); the workload launches nothing of ours before the two
    # profiled calls, so no --launch-skip is needed.
    rc, _ = check.run([ncu, "--target-processes", "application-only", "--kernel-name-base",
                       "demangled", "--kernel-name", "regex:rubiks", "--launch-count", "16",
                       "--metrics", ",".join(gpu_profile.METRICS), "--csv", "--print-units",
                       "base", "--log-file", str(csv_path), check.python, "tools/gpu_profile.py",
                       "run"], env={**PLATFORM_ALLOCATOR, "RUBIKS_JAX_CUDA_KERNELS": "v4"})
    text = csv_path.read_text(errors="replace") if csv_path.exists() else ""
    if "ERR_NVGPUCTRPERM" in text:
        raise Failed("GPU performance counters are not permitted here (ERR_NVGPUCTRPERM)")
    if rc:
        raise Failed(f"ncu or the workload failed (exit status {rc})")
    launches = gpu_profile.parse_ncu_csv(text)
    if not launches:
        raise Failed("ncu profiled no kernel of ours")
    check.say(gpu_profile.format_table(launches, "(8, 8, 56, 56, 72) float32, v4 kernels"),
              echo=False)
    check.say("", echo=False)
    json_path.write_text(json.dumps({"title": "v4", "launches": launches}))
    gpu_summary.attach(str(check.out), "profile", str(json_path), None)
    return f"{len(launches)} launches of the v4 kernels profiled (table in profile.log)"


def stage_bench(check: Check) -> str:
    require_gpu()
    require_build(check)
    bench = check.scratch / "bench"
    shutil.rmtree(bench, ignore_errors=True)
    bench.mkdir(parents=True)
    data = gpu_summary.load(str(check.out))
    data.pop("bench", None)  # no results of an earlier run beside this one's
    gpu_summary.save(str(check.out), data)
    notes = []
    runs = {"v3": ("ffi,xla",), "v4": ("ffi",)}
    for version, (impls,) in runs.items():
        path = bench / f"op_{version}.json"
        rc, _ = check.run([check.python, "-m", "rubiks_jax.bench", "op", "--impls", impls,
                           "--json", str(path)], env={"RUBIKS_JAX_CUDA_KERNELS": version})
        if rc:
            raise Failed(f"op suite with {version}: " + ("timeout" if rc == 124 else f"exit {rc}"))
        gpu_summary.attach(str(check.out), "bench", str(path), f"op_{version}")
    results = {v: json.loads((bench / f"op_{v}.json").read_text()) for v in runs}
    check.say("\n".join(gpu_summary.ab_table(results["v3"], results["v4"])), echo=False)
    check.say("", echo=False)
    notes.append("op A/B ok")
    for name, needed, args in MORE_SUITES:
        if check.remaining() < needed:
            notes.append(f"{name} skipped (time)")
            check.partial = True
            continue
        path = bench / f"{name}.json"
        rc, _ = check.run([check.python, "-m", "rubiks_jax.bench", *args, "--json", str(path)])
        if rc == 0:
            gpu_summary.attach(str(check.out), "bench", str(path), name)
        else:
            check.partial = True
        notes.append(f"{name} " + ("ok" if rc == 0 else "timeout" if rc == 124 else "FAILED"))
    figures = _figures(check, bench)
    if figures:
        notes.append(figures)
    return ", ".join(notes)


def _figures(check: Check, bench: Path) -> str:
    args = [a for name in ("block", "model") if (bench / f"{name}.json").exists()
            for a in (f"--{name}", str(bench / f"{name}.json"))]
    if not args:
        return ""
    if check.remaining() < 20:
        check.partial = True
        return "plots skipped (time)"
    out = check.scratch / "figures"
    rc, _ = check.run([check.python, "-m", "rubiks_jax.bench.plots", "--out", str(out),
                       "--prefix", "gpu_", *args])
    pngs = sorted(glob.glob(str(out / "gpu_*.png")))
    if rc or not pngs:
        check.partial = True
        return "plots FAILED"
    gpu_summary.stack_png(str(check.out / "gpu_figures.png"), pngs)  # one file of the 8
    return "plots ok"


STAGE_FUNCTIONS = {"preflight": stage_preflight, "build": stage_build, "test": stage_test,
                   "sanitize": stage_sanitize, "profile": stage_profile, "bench": stage_bench}


def run_stage(check: Check, name: str) -> bool:
    check.log_path = check.out / f"{name}.log"
    check.log_path.write_text("")
    check.partial = False
    start = time.monotonic()
    check.stage_deadline = start + BUDGET_S[name]
    check.say(f"=== {name}: started {time.strftime('%H:%M:%S', time.gmtime())} UTC, budget "
              f"{int(check.remaining())} s")
    try:
        note, status = STAGE_FUNCTIONS[name](check), "ok"
        if check.partial:
            status = "partial"
    except Failed as err:
        note, status = str(err), "FAILED"
        check.say(f"FAILED: {note}")
    seconds = time.monotonic() - start
    check.say(f"=== {name}: {status} in {seconds:.0f} s" + (f": {note}" if note else ""))
    _trim(check.log_path)
    check.log_path = None
    gpu_summary.record(str(check.out), name, status, seconds, note)
    return status != "FAILED"


def _trim(path: Path, limit: int = 1 << 20) -> None:
    """Keeps a log under 1 MiB (its head and tail), so that it still comes back whole."""
    data = path.read_bytes()
    if len(data) > limit:
        cut = len(data) - limit + 1024
        path.write_bytes(data[:limit // 4] + f"\n... [{cut} bytes cut] ...\n".encode() +
                         data[-(limit * 3 // 4 - 1024):])


def _install_wheels(python: str) -> None:
    wheels = sorted(glob.glob(str(REPO / ".whl" / "*.whl")))
    if not wheels:
        return
    site = Path("/tmp/rubiks_site")
    stamp = site / ".wheels"
    if not stamp.exists() or stamp.read_text() != "\n".join(wheels):
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--upgrade", "--target", str(site), *wheels], check=False)
        site.mkdir(exist_ok=True)
        stamp.write_text("\n".join(wheels))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"),
                                                             str(site)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gpu_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", default=["all"], metavar="STAGE",
                        help=f"of {', '.join(STAGES)}, or all (the default)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench_out" / "gpu"))
    parser.add_argument("--total", type=float, default=TOTAL_S, help="seconds for the whole call")
    args = parser.parse_args(argv)
    stages = STAGES if args.stages == ["all"] else args.stages
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r} (expected {', '.join(STAGES)} or all)")
    out = Path(args.out).resolve()
    scratch = Path(os.environ.get("GPU_CHECK_SCRATCH", "/tmp/rubiks_gpu_check"))
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    python = os.environ.get("PYTHON", sys.executable)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                             os.environ.get("PYTHONPATH")]))
    _install_wheels(python)
    check = Check(out=out, scratch=scratch, python=python,
                  deadline=time.monotonic() + args.total)
    ok = True
    for name in [s for s in STAGES if s in stages]:  # in the check's order
        ok = run_stage(check, name) and ok
        if not ok and name in ("preflight", "build"):
            break  # nothing after them can run
    print()
    print("\n".join(gpu_summary.summary_lines(str(out))))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
