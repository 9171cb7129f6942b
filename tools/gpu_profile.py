"""Nsight Compute profile of the CUDA kernels at the paper's shape (tools/gpu_check.py profile).

  python tools/gpu_profile.py run [--shape 8,8,56,56,72] [--dtype float32]
      the workload, run under ncu: one forward call and one backward call (input and shift
      gradients), compiled ahead of time so that these are the only launches of our kernels in
      the process (ncu then needs no --launch-skip, whatever the kernels' structure);
  python tools/gpu_profile.py table NCU_CSV [--json OUT]
      the compact table of `ncu --csv --print-units base` output (see METRICS);
  python tools/gpu_profile.py metrics
      the metrics to collect, comma-separated (for ncu --metrics).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys

# ncu metric -> column. Units with --print-units base: ns, %, counts.
METRICS = {
    "gpu__time_duration.sum": "time",
    "sm__inst_issued.avg.pct_of_peak_sustained_active": "issue",  # issue slots busy
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram",
    "dram__bytes_read.sum": "dram_read",
    "dram__bytes_write.sum": "dram_write",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": "ld_sectors",
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum": "ld_requests",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum": "st_sectors",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum": "st_requests",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy",  # achieved occupancy
    "launch__registers_per_thread": "regs",
}
TABLE_TITLE = "ncu profile"  # first line of the table (tools/gpu_summary.py looks for it)


# ------------------------------------------------------------------------------------------------
# The workload
# ------------------------------------------------------------------------------------------------
def run(shape: tuple[int, ...], dtype_name: str) -> int:
    import jax
    import jax.numpy as jnp

    from rubiks_jax.ops import cuda_built, rubiks_shift

    if jax.default_backend() != "gpu" or not cuda_built():
        print(f"gpu profile: needs a GPU and the CUDA kernels (devices {jax.devices()}, "
              f"cuda_built {cuda_built()})", file=sys.stderr)
        return 1
    dtype = jnp.dtype(dtype_name)
    kx, ks, kd = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, shape, dtype)
    s = jax.random.uniform(ks, (shape[-1], 3), jnp.float32, -1.0, 1.0)
    dy = jax.random.normal(kd, shape, dtype)

    def op(a, b):
        return rubiks_shift(a, b, impl="ffi")

    def backward(a, b, g):  # y is unused, so XLA drops the forward: the two gradients alone
        return jax.vjp(op, a, b)[1](g)

    # Warm-up = compilation only: nothing of ours is launched before the two profiled calls.
    forward = jax.jit(op).lower(x, s).compile()
    backward = jax.jit(backward).lower(x, s, dy).compile()
    jax.block_until_ready((x, s, dy))
    jax.block_until_ready(forward(x, s))
    jax.block_until_ready(backward(x, s, dy))
    print(f"gpu profile: forward and backward once at {shape} {dtype.name} on "
          f"{jax.devices()[0].device_kind}")
    return 0


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------
def short_name(demangled: str) -> str:
    """'void rubiks::(anonymous namespace)::interpolate_kernel<(rubiks::DType)0, false, true, int>
    (...)' -> 'interpolate_kernel<0,F,T,i32>': no return type, namespaces, enum casts or parameters,
    and short template arguments, so that the variants fit one column."""
    name, depth = demangled.strip(), 0
    for i, ch in enumerate(name):  # the parameter list is the first '(' outside template brackets
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "(" and depth == 0 and i > 0 and not name[:i].endswith("::"):
            name = name[:i]
            break
    name = name.removeprefix("void ")
    name = re.sub(r"\(anonymous namespace\)::|\b[A-Za-z_]\w*::", "", name)
    name = re.sub(r"\([A-Za-z_:]+\)", "", name)  # enum casts such as (DType)0
    for long, short in (("false", "F"), ("true", "T"), ("unsigned int", "u32"), ("int", "i32"),
                        ("long", "i64")):
        name = re.sub(rf"\b{long}\b", short, name)
    return name.replace(", ", ",")


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))  # ncu may print thousands separators
    except ValueError:
        return None


def parse_ncu_csv(text: str) -> list[dict]:
    """One dict per profiled launch, in launch order: kernel, block, grid and METRICS columns.

    Reads the long format of `ncu --csv` (one row per launch and metric); lines before the header
    (==PROF== messages) are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    launches: dict[str, dict] = {}
    for row in csv.DictReader(lines[start:]):
        if not row.get("ID") or row.get("Metric Name") not in METRICS:
            continue
        launch = launches.setdefault(row["ID"], {
            "kernel": short_name(row.get("Kernel Name", "?")),
            "block": _dims(row.get("Block Size", "")), "grid": _dims(row.get("Grid Size", ""))})
        launch[METRICS[row["Metric Name"]]] = _number(row.get("Metric Value", ""))
    return list(launches.values())


def _dims(text: str) -> str:
    """'(256, 1, 1)' -> '256', '(32, 8, 1)' -> '32x8': launch dimensions without trailing ones."""
    dims = re.findall(r"\d+", text)
    while len(dims) > 1 and dims[-1] == "1":
        dims.pop()
    return "x".join(dims) or "?"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_table(launches: list[dict], title: str) -> str:
    def f(value, spec):  # a number, or '-' where ncu gave none
        return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])

    lines = [f"{TABLE_TITLE}: {title}",
             "kernel (launch order)                  grid x block   time us issue% dram%  GB/s "
             "ld s/req st s/req occup% regs"]
    for r in launches:
        dram_bytes = (r.get("dram_read") or 0) + (r.get("dram_write") or 0)
        gbps = _ratio(dram_bytes, r.get("time"))  # bytes per ns = GB/s
        lines.append(
            f"{r['kernel'][:38]:38s} {(r['grid'] + ' x ' + r['block'])[:14]:14s} "
            f"{f(_ratio(r.get('time'), 1e3), '8.1f')} {f(r.get('issue'), '6.1f')} "
            f"{f(r.get('dram'), '5.1f')} {f(gbps, '5.0f')} "
            f"{f(_ratio(r.get('ld_sectors'), r.get('ld_requests')), '8.2f')} "
            f"{f(_ratio(r.get('st_sectors'), r.get('st_requests')), '8.2f')} "
            f"{f(r.get('occupancy'), '6.1f')} {f(r.get('regs'), '4.0f')}")
    lines.append("ncu replays each launch with flushed caches at base clocks: times are not the "
                 "benchmarks'")
    return "\n".join(lines)


def table(csv_path: str, json_path: str | None, title: str) -> int:
    with open(csv_path, errors="replace") as f:
        launches = parse_ncu_csv(f.read())
    if not launches:
        print(f"gpu profile: no kernel of ours was profiled (no rows in {csv_path})",
              file=sys.stderr)
        return 1
    print(format_table(launches, title))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"title": title, "launches": launches}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="the profiled workload")
    p_run.add_argument("--shape", default="8,8,56,56,72", help="N,T,H,W,C")
    p_run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p_table = sub.add_parser("table", help="print the table of an ncu CSV")
    p_table.add_argument("csv")
    p_table.add_argument("--json", default=None, help="also write the rows here")
    p_table.add_argument("--title", default="(8, 8, 56, 56, 72) float32, forward + backward")
    sub.add_parser("metrics", help="print the metrics for ncu --metrics")
    args = parser.parse_args(argv)
    if args.command == "metrics":
        print(",".join(METRICS))
        return 0
    if args.command == "run":
        return run(tuple(int(v) for v in args.shape.split(",")), args.dtype)
    return table(args.csv, args.json, args.title)


if __name__ == "__main__":
    sys.exit(main())
