"""Memory model of the CUDA kernels, on the host: what a warp's loads and stores ask of the memory
system, and the time that implies on an H200, without a GPU.

    python tools/gpu_memory_model.py [--shape 8,8,56,56,72] [--dtypes float32,bfloat16]
        [--versions v2,v3] [--sample-blocks 256] [--json OUT.json]
    python tools/gpu_memory_model.py --calibrate     the calibration table against the H200 profile

How: tools/memory_trace.cc (compiled here with the host C++ compiler, loaded with ctypes) runs the
kernels' own thread bodies (xla_ops/rubiks_shift_kernels.h, as the host emulation does) over a
sample of each launch's blocks, spread evenly, and records every global and shared access. A warp's
32 lanes are lined up per static access site and loop entry, as SIMT issues them. Per kernel,
version and dtype it reports:
- load / store sectors per request: distinct 32-byte sectors a warp's access touches (ncu's
  l1tex__t_sectors / l1tex__t_requests for global loads and stores);
- requests and sectors per output element;
- distinct sectors per block: what the block must bring into L1 at least once (L1 cannot save it);
- bytes in flight per SM: the sector bytes of the loads a warp issues before their first use (one
  point of a loop: its batch), times the warps resident per SM at the occupancy ptxas allows
  (registers from tools/sass.py, which compiles the kernels with nvcc: no GPU needed);
- predicted time on an H200 and the kernel's memory floor (its tensors' bytes at the 3.8 TB/s the
  op suite measured there).

The time model (calibrated on the H200 ncu profile; see CALIBRATION and --calibrate): a warp runs
its batches one after another, each waiting latency_ns = base + per_sector * (sectors in the batch)
(a scattered batch queues more sectors through L1 and L2), plus its own instructions (loop
iterations x the static size of the kernel's point loop, one per cycle); the SM's resident warps
overlap, so the kernel takes as many such chains as it has waves of resident blocks, the last one
however full. The prediction is the largest of that, the DRAM floor, L1's sector throughput (4
sectors per cycle per SM) and the SM's issue throughput (4 instructions per cycle). Not modelled:
L2 bandwidth, barriers' waits, shared-memory latency, an SM's blocks at different phases.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: tools/ is then sys.path[0], not the repository
    sys.path.insert(0, str(REPO))

from rubiks_jax.ops import ffi_kernels  # noqa: E402
from rubiks_jax.ops.geometry import Geometry  # noqa: E402
from tools import sass  # noqa: E402

TRACE_SOURCE = REPO / "tools" / "memory_trace.cc"
KERNELS = ("forward", "input_grad", "shift_grad_pass1")
VERSIONS = {"v2": 2, "v3": 3, "v4": 4}
# The CUDA v2 kernels' source: the commit before v3 (docs/KERNEL_NOTES.md), for v2's registers.
V2_REVISION = "1fcf8af"
DTYPES = {"float32": (0, 4, "f32"), "bfloat16": (1, 2, "bf16"), "float16": (2, 2, "f16")}
STATS = ("blocks", "threads", "load_requests", "load_sectors", "load_lanes", "load_bytes",
         "store_requests", "store_sectors", "store_lanes", "store_bytes", "block_load_sectors",
         "block_store_sectors", "batches", "batch_sectors", "shared_requests", "shared_wavefronts",
         "launch_blocks", "warp_iterations")
THREADS_PER_BLOCK = 256  # every kernel traced here (kThreads)


@dataclasses.dataclass(frozen=True)
class GPU:
    """The H200 of the project's GPU sessions (docs/KERNEL_NOTES.md, docs/BENCHMARKS.md)."""

    name: str = "NVIDIA H200"
    sms: int = 132
    clock_ghz: float = 1.98           # boost clock
    dram_tb_s: float = 3.8            # x -> -x in the op suite, f32 (the floor's bandwidth)
    l1_sectors_per_cycle: int = 4     # 128 B per cycle per SM
    latency_base_ns: float = 0.0      # per batch: fitted by --calibrate (CALIBRATION)
    latency_per_sector_ns: float = 0.0


# The H200 ncu profile (docs/KERNEL_NOTES.md, "v2 measured on the H200" and "v3"): paper shape,
# f32, shift uniform in [-1, 1) from jax.random.split(PRNGKey(0), 3)[1] as tools/gpu_profile.py
# draws it; one launch each at base clocks with flushed caches. None: not measured.
CALIBRATION = {
    ("v2", "forward"): dict(time_us=121.9, load_spr=13.6, store_spr=5.7, occupancy=0.46),
    ("v2", "input_grad"): dict(time_us=125.4, load_spr=13.6, store_spr=5.7, occupancy=0.56),
    ("v2", "shift_grad_pass1"): dict(time_us=213.5, load_spr=11.8, store_spr=12.0, occupancy=0.36),
    ("v3", "forward"): dict(time_us=105.2, load_spr=None, store_spr=None, occupancy=None),
    ("v3", "input_grad"): dict(time_us=110.5, load_spr=None, store_spr=None, occupancy=None),
    # v3's pass 1 compiles to v2's code (kMayCarry = false): the v2 row stands for it.
}
# The two time-model parameters are fitted on these (the forward with and without the carry);
# every other row of CALIBRATION is a prediction the fit did not see.
FIT_ON = (("v2", "forward"), ("v3", "forward"))


# ------------------------------------------------------------------------------------------------
# The trace library
# ------------------------------------------------------------------------------------------------
def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise SystemExit("gpu_memory_model needs a C++20 host compiler (g++; or set CXX)")
    return cxx


def library(defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """tools/memory_trace.cc with the kernel headers, compiled once per source version and set of
    preprocessor `defines` (e.g. RUBIKS_V4_SHORT_STAGE, the tests' deliberate staging bug)."""
    sources = [TRACE_SOURCE, *sorted((REPO / "xla_ops").glob("*.h"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) +
                            repr(defines).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "rubiks_memory_model" / f"trace_{digest}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        cmd = [_compiler(), "-std=c++20", "-O2", "-ffp-contract=off", "-DRUBIKS_MEMORY_TRACE",
               "-Wno-unknown-pragmas", "-shared", "-fPIC", f"-I{REPO / 'xla_ops'}",
               *(f"-D{d}" for d in defines),
               str(TRACE_SOURCE), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"compiling the memory trace failed:\n{' '.join(cmd)}\n{done.stderr}")
        tmp.replace(out)
    lib = ctypes.CDLL(str(out))
    lib.rubiks_trace.restype = ctypes.c_int
    lib.rubiks_trace.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_float),
                                 ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_double)]
    lib.rubiks_v4_mismatches.restype = ctypes.c_int64
    lib.rubiks_v4_mismatches.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_int64),
                                         ctypes.POINTER(ctypes.c_float), ctypes.c_int]
    if lib.rubiks_trace_stat_count() != len(STATS):
        raise SystemExit("tools/memory_trace.cc and gpu_memory_model.STATS disagree")
    return lib


@dataclasses.dataclass(frozen=True)
class Shape:
    """(N, T, H, W, C) with the op's stride and padding per (t, h, w) axis."""

    n: int
    size: tuple[int, int, int]
    c: int
    stride: tuple[int, int, int] = (1, 1, 1)
    pad: tuple[int, int, int] = (0, 0, 0)

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.size, self.stride, self.pad)

    @property
    def out(self) -> tuple[int, int, int]:
        return self.geometry.out_size

    def elements(self, extent) -> int:
        return self.n * math.prod(extent) * self.c

    def chunks(self) -> int:
        """The shift gradient's reduction chunks, as the op chooses them."""
        return ffi_kernels.reduction_chunks(self.n, self.geometry)


def profile_shift(c: int) -> np.ndarray:
    """The shift tools/gpu_profile.py profiles with: uniform in [-1, 1), jax's PRNGKey(0)."""
    import jax
    import jax.numpy as jnp

    ks = jax.random.split(jax.random.PRNGKey(0), 3)[1]
    return np.asarray(jax.random.uniform(ks, (c, 3), jnp.float32, -1.0, 1.0))


def _geometry(shape: Shape):
    return (ctypes.c_int64 * 14)(shape.n, *shape.size, *shape.out, shape.c, *shape.stride,
                                 *shape.pad)


def v4_mismatches(lib: ctypes.CDLL, kernel: str, dtype: str, shape: Shape, shift: np.ndarray,
                  quantize: bool = False) -> int:
    """Elements where v4's forward or input gradient differs from v3's bit for bit (random source;
    shared memory NaN-filled before each block)."""
    shift = np.ascontiguousarray(shift, np.float32)
    n = lib.rubiks_v4_mismatches(KERNELS.index(kernel), DTYPES[dtype][0], _geometry(shape),
                                 shift.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                 int(quantize))
    if n < 0:
        raise ValueError(f"v4_mismatches: unknown kernel/dtype {kernel}/{dtype}")
    return int(n)


def trace(lib: ctypes.CDLL, kernel: str, version: str, dtype: str, shape: Shape,
          shift: np.ndarray, sample_blocks: int) -> dict:
    """The trace's counts over the sampled blocks, and the launch's block count."""
    shift = np.ascontiguousarray(shift, np.float32)
    stats = (ctypes.c_double * len(STATS))()
    rc = lib.rubiks_trace(KERNELS.index(kernel), VERSIONS[version], DTYPES[dtype][0],
                          _geometry(shape),
                          shift.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), shape.chunks(),
                          sample_blocks, stats)
    if rc:
        raise ValueError(f"memory trace: unknown kernel/version/dtype {kernel}/{version}/{dtype}")
    result = dict(zip(STATS, stats))
    result["total_blocks"] = result.pop("launch_blocks")
    return result


# ------------------------------------------------------------------------------------------------
# Occupancy (registers from ptxas, through tools/sass.py)
# ------------------------------------------------------------------------------------------------
def kernel_name(kernel: str, version: str, dtype: str) -> str:
    """The tools/sass.py name of the kernel a launch of (kernel, version, dtype) runs at unit w
    stride with 32-bit offsets (v4's shift gradient is v3's)."""
    short = DTYPES[dtype][2]
    if kernel == "shift_grad_pass1":
        return f"rubiks_shift_grad_partials_kernel<{short}, i32>"
    direction = "adjoint" if kernel == "input_grad" else "forward"
    family = "rubiks_interpolate_v4_kernel" if version == "v4" else "rubiks_interpolate_kernel"
    return f"{family}<{short}, {direction}, unit-w, i32>"


def sass_rows(versions: list[str]) -> dict[tuple[str, str], dict]:
    """{(version, sass kernel name): sass row}: v3 and v4 from the working tree, v2 from
    V2_REVISION."""
    result = sass.run(baseline=V2_REVISION if "v2" in versions else None)
    rows = {}
    for r in result["rows"]:
        for version in (["v3", "v4"] if r["version"] == "current" else ["v2"]):
            rows[(version, r["kernel"])] = r
    return rows


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------
def floor_bytes(kernel: str, shape: Shape, dtype: str) -> tuple[int, int]:
    """(read, written): the bytes the kernel must move at least, each tensor once."""
    size = DTYPES[dtype][1]
    x, y = shape.elements(shape.size), shape.elements(shape.out)
    if kernel == "shift_grad_pass1":  # reads x and dy, writes (chunks, C, 3) float32 partials
        return (x + y) * size, shape.chunks() * shape.c * 3 * 4
    if kernel == "input_grad":  # dy -> dx
        return y * size, x * size
    return x * size, y * size  # forward: x -> y


def evaluate(stats: dict, row: dict, kernel: str, version: str, dtype: str, shape: Shape,
             gpu: GPU) -> dict:
    """The model's figures for one launch from its trace counts and its sass row."""
    s, scale = stats, stats["total_blocks"] / max(stats["blocks"], 1)
    # Output elements (the forward's y, the input gradient's dx; pass 1: the points it sums).
    elements = shape.elements(shape.size if kernel == "input_grad" else shape.out)
    warps_per_block = THREADS_PER_BLOCK // 32
    resident_blocks = row["blocks_per_sm"]
    waves = stats["total_blocks"] / (gpu.sms * resident_blocks)
    warps_resident = min(row["warps_per_sm"], stats["total_blocks"] * warps_per_block / gpu.sms)
    batches_per_warp = s["batches"] / max(s["blocks"] * warps_per_block, 1)
    iterations_per_warp = s["warp_iterations"] / max(s["blocks"] * warps_per_block, 1)
    # Instructions a warp issues per loop iteration: the static size of the kernel's steady-state
    # point loop (tools/sass.py: the shortest loop that loads and stores), else of its specialised
    # loop (the shift gradient's pass 1 stores once per thread, outside its loops).
    loop = row.get("point_loop") or row["fast_loop"] or row["loop"]
    per_iteration = loop["instructions"] if loop else 0
    sectors_per_batch = s["batch_sectors"] / max(s["batches"], 1)
    total_sectors = (s["load_sectors"] + s["store_sectors"]) * scale
    read_bytes, written_bytes = floor_bytes(kernel, shape, dtype)
    floor_us = (read_bytes + written_bytes) / (gpu.dram_tb_s * 1e12) * 1e6
    # A warp's batches run one after another; the SM's resident warps overlap, so the kernel takes
    # as many of those chains as it has waves of resident blocks (the last one too, however full).
    batch_ns = gpu.latency_base_ns + gpu.latency_per_sector_ns * sectors_per_batch
    issue_ns = iterations_per_warp * per_iteration / gpu.clock_ghz  # a warp's own instructions
    latency_us = math.ceil(waves) * (batches_per_warp * batch_ns + issue_ns) / 1e3
    l1_us = total_sectors / (gpu.sms * gpu.l1_sectors_per_cycle * gpu.clock_ghz * 1e3)
    # Every warp's instructions through the SM's 4 schedulers (one instruction each per cycle).
    issue_us = (s["warp_iterations"] * scale * per_iteration /
                (gpu.sms * 4 * gpu.clock_ghz * 1e3))
    load_sector_bytes = s["load_sectors"] * scale * 32
    in_flight = warps_resident * sectors_per_batch * 32
    return dict(
        kernel=kernel, version=version, dtype=dtype,
        shape=[shape.n, *shape.size, shape.c], sampled_blocks=int(s["blocks"]),
        total_blocks=int(stats["total_blocks"]),
        load_sectors_per_request=s["load_sectors"] / max(s["load_requests"], 1),
        store_sectors_per_request=s["store_sectors"] / max(s["store_requests"], 1),
        load_requests_per_element=s["load_requests"] * scale / elements,
        load_sectors_per_element=s["load_sectors"] * scale / elements,
        store_requests_per_element=s["store_requests"] * scale / elements,
        store_sectors_per_element=s["store_sectors"] * scale / elements,
        distinct_load_sectors_per_block=s["block_load_sectors"] / max(s["blocks"], 1),
        l1_fill_bytes=s["block_load_sectors"] * scale * 32,
        shared_wavefronts_per_request=(s["shared_wavefronts"] / s["shared_requests"]
                                       if s["shared_requests"] else None),
        registers=row["registers"], spill_bytes=row["spill_store_bytes"] + row["spill_load_bytes"],
        warps_per_sm=row["warps_per_sm"], waves=waves,
        batches_per_warp=batches_per_warp, sectors_per_batch=sectors_per_batch,
        iterations_per_warp=iterations_per_warp, instructions_per_iteration=per_iteration,
        warp_issue_ns=issue_ns,
        bytes_in_flight_per_sm=in_flight,
        # The part of those bytes that is first-touch data (the rest hits L1 or L2): what sustains
        # DRAM bandwidth by Little's law.
        unique_bytes_in_flight_per_sm=in_flight * min(1.0, read_bytes / load_sector_bytes),
        floor_us=floor_us, latency_bound_us=latency_us, l1_bound_us=l1_us, issue_bound_us=issue_us,
        predicted_us=max(floor_us, latency_us, l1_us, issue_us))


def model(shape: Shape, dtypes: list[str], versions: list[str], sample_blocks: int,
          gpu: GPU, shift: np.ndarray | None = None) -> list[dict]:
    lib = library()
    rows = sass_rows(versions)
    shift = profile_shift(shape.c) if shift is None else shift
    out = []
    for version in versions:
        for dtype in dtypes:
            for kernel in KERNELS:
                name = kernel_name(kernel, version, dtype)
                if (version, name) not in rows:
                    raise SystemExit(f"tools/sass.py reports no kernel {name} for {version}")
                stats = trace(lib, kernel, version, dtype, shape, shift, sample_blocks)
                out.append(evaluate(stats, rows[(version, name)], kernel, version, dtype, shape,
                                    gpu))
    return out


def fit(rows: list[dict], gpu: GPU) -> GPU:
    """The latency parameters that make the FIT_ON rows' latency-bound times the profile's."""
    (a_key, b_key) = FIT_ON
    pick = {(r["version"], r["kernel"]): r for r in rows if r["dtype"] == "float32"}
    a, b = pick[a_key], pick[b_key]
    # time = ceil(waves) * (batches * (base + per_sector * sectors) + warp issue): per batch,
    # two equations in two unknowns.
    def per_batch_ns(r, key):
        chain_ns = CALIBRATION[key]["time_us"] * 1e3 / math.ceil(r["waves"]) - r["warp_issue_ns"]
        return chain_ns / r["batches_per_warp"]

    ta, tb = per_batch_ns(a, a_key), per_batch_ns(b, b_key)
    per_sector = (ta - tb) / (a["sectors_per_batch"] - b["sectors_per_batch"])
    base = ta - per_sector * a["sectors_per_batch"]
    return dataclasses.replace(gpu, latency_base_ns=base, latency_per_sector_ns=per_sector)


def fitted_gpu(shape: Shape, sample_blocks: int) -> tuple[GPU, list[dict]]:
    """The H200 with its latency fitted on the paper shape's profile, and the f32 v2/v3 rows."""
    paper = Shape(8, (8, 56, 56), 72)
    rows = model(paper, ["float32"], ["v2", "v3"], sample_blocks, GPU())
    gpu = fit(rows, GPU())
    return gpu, model(paper, ["float32"], ["v2", "v3"], sample_blocks, gpu)


def calibration_table(rows: list[dict], gpu: GPU) -> str:
    lines = [f"calibration against the H200 ncu profile (f32, paper shape); fitted on "
             f"{', '.join('/'.join(k) for k in FIT_ON)}: latency per batch = "
             f"{gpu.latency_base_ns:.0f} ns + {gpu.latency_per_sector_ns:.2f} ns x sectors",
             f"{'version':7s} {'kernel':17s} {'ld sect/req':>17s} {'st sect/req':>17s} "
             f"{'time (us)':>22s}",
             f"{'':25s} {'ncu':>5s} {'model':>5s} {'err':>5s} {'ncu':>5s} {'model':>5s} "
             f"{'err':>5s} {'ncu':>6s} {'model':>6s} {'err':>6s}"]

    def cell(measured, modelled, width=5):
        if measured is None:
            return f"{'-':>{width}s} {modelled:{width}.1f} {'':>{width}s}"
        return (f"{measured:{width}.1f} {modelled:{width}.1f} "
                f"{(modelled / measured - 1) * 100:+{width - 1}.0f}%")

    for r in rows:
        ref = CALIBRATION.get((r["version"], r["kernel"]))
        if ref is None or r["dtype"] != "float32":
            continue
        lines.append(f"{r['version']:7s} {r['kernel']:17s} "
                     f"{cell(ref['load_spr'], r['load_sectors_per_request'])} "
                     f"{cell(ref['store_spr'], r['store_sectors_per_request'])} "
                     f"{cell(ref['time_us'], r['predicted_us'], 6)}")
    order = lambda key: [k for k, _ in sorted(  # noqa: E731
        ((r["version"], r["kernel"]), key(r)) for r in rows
        if (r["version"], r["kernel"]) in CALIBRATION and r["dtype"] == "float32")]
    by_ncu = sorted(CALIBRATION, key=lambda k: CALIBRATION[k]["time_us"])
    by_model = sorted(order(lambda r: 0), key=lambda k: next(
        r["predicted_us"] for r in rows if (r["version"], r["kernel"]) == k
        and r["dtype"] == "float32"))
    same = by_ncu == by_model
    lines.append(f"order by time, ncu:   {' < '.join('/'.join(k) for k in by_ncu)}")
    lines.append(f"order by time, model: {' < '.join('/'.join(k) for k in by_model)}"
                 f"  ({'same' if same else 'DIFFERENT'})")
    return "\n".join(lines)


def format_table(rows: list[dict], gpu: GPU) -> str:
    lines = [f"memory model of the CUDA kernels on an {gpu.name} ({gpu.sms} SMs, floor at "
             f"{gpu.dram_tb_s} TB/s; latency {gpu.latency_base_ns:.0f} ns + "
             f"{gpu.latency_per_sector_ns:.2f} ns x sectors per batch)",
             f"{'kernel':17s} {'ver':3s} {'dtype':8s} {'ld s/req':>8s} {'st s/req':>8s} "
             f"{'req/el':>6s} {'sect/el':>7s} {'blk sect':>8s} {'regs':>4s} {'warps':>5s} "
             f"{'KB flight/SM':>12s} {'(unique)':>8s} {'pred us':>7s} {'floor':>6s} {'x':>5s}"]
    for r in rows:
        lines.append(
            f"{r['kernel']:17s} {r['version']:3s} {r['dtype']:8s} "
            f"{r['load_sectors_per_request']:8.1f} {r['store_sectors_per_request']:8.1f} "
            f"{r['load_requests_per_element']:6.3f} {r['load_sectors_per_element']:7.2f} "
            f"{r['distinct_load_sectors_per_block']:8.0f} {r['registers']:4d} "
            f"{r['warps_per_sm']:5d} {r['bytes_in_flight_per_sm'] / 1024:12.1f} "
            f"{r['unique_bytes_in_flight_per_sm'] / 1024:8.1f} {r['predicted_us']:7.1f} "
            f"{r['floor_us']:6.1f} {r['predicted_us'] / r['floor_us']:5.2f}")
    sampled = {(r["sampled_blocks"], r["total_blocks"]) for r in rows}
    lines.append("traced blocks (of the launch's): " + ", ".join(
        f"{a} of {b}" for a, b in sorted(sampled)) + f"; {THREADS_PER_BLOCK // 32} warps each")
    return "\n".join(lines)


def parse_shape(text: str) -> Shape:
    try:
        n, t, h, w, c = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--shape: expected N,T,H,W,C (five integers), got {text!r}") from None
    if min(n, t, h, w, c) <= 0:
        raise SystemExit(f"--shape: every extent must be positive, got {text!r}")
    return Shape(n, (t, h, w), c)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/gpu_memory_model.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8,8,56,56,72", help="N,T,H,W,C (default: the paper's)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--versions", default="v2,v3", help=f"of {', '.join(VERSIONS)}")
    parser.add_argument("--sample-blocks", type=int, default=256,
                        help="blocks traced per launch, spread evenly (0: all)")
    parser.add_argument("--calibrate", action="store_true",
                        help="print the calibration table against the H200 profile")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    shape = parse_shape(args.shape)
    dtypes, versions = args.dtypes.split(","), args.versions.split(",")
    for d in dtypes:
        if d not in DTYPES:
            raise SystemExit(f"--dtypes: unknown dtype {d!r} (expected {', '.join(DTYPES)})")
    for v in versions:
        if v not in VERSIONS:
            raise SystemExit(f"--versions: unknown version {v!r} (expected {', '.join(VERSIONS)})")
    gpu, calibration_rows = fitted_gpu(shape, args.sample_blocks)
    if args.calibrate:
        print(calibration_table(calibration_rows, gpu) + "\n")
    rows = model(shape, dtypes, versions, args.sample_blocks, gpu)
    print(format_table(rows, gpu))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
