"""tools/gpu_check.py and its helpers, on any machine: the parts that need no GPU (arguments,
failing cleanly without a GPU, the ncu table, the op A/B table, the summary and its limits)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import gpu_check, gpu_profile, gpu_summary

REPO = Path(__file__).resolve().parents[2]
HAS_NVIDIA_SMI = shutil.which("nvidia-smi") is not None

FORWARD = ("void rubiks::(anonymous namespace)::interpolate_kernel<(rubiks::DType)0, false, true, "
           "int>(const float *, const float *, float *, rubiks::Geometry, bool, long)")
REDUCE = "void rubiks::(anonymous namespace)::shift_grad_reduce_kernel(const float *, float *, long)"


def _ncu_csv(rows: list[tuple[str, str, str, str, str]]) -> str:
    """ncu --csv long format: (id, kernel, block, metric, value) rows after ncu's own messages."""
    lines = ['==PROF== Connected to process 1 (/usr/bin/python3)',
             '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
             '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
             '"Metric Value"']
    for launch, kernel, block, metric, value in rows:
        lines.append(f'"{launch}","1","python3","host","{kernel}","1","7","{block}","(7056, 1, 1)",'
                     f'"0","9.0","Command line profiler metrics","{metric}","","{value}"')
    return "\n".join(lines) + "\n"


def _run_check(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"GPU_CHECK_SCRATCH": str(tmp_path / "scratch"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "tools/gpu_check.py", *args, "--out",
                           str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------------------------
# gpu_check.py
# ------------------------------------------------------------------------------------------------
def test_unknown_stage_is_named_and_nothing_runs(tmp_path):
    out = _run_check("benchmark", tmp_path=tmp_path)
    assert out.returncode == 2
    assert "unknown stage 'benchmark'" in out.stderr and "preflight" in out.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this machine has nvidia-smi")
def test_all_stops_after_preflight_without_a_gpu(tmp_path):
    """The default call (every stage) fails at once, saying why, and runs nothing else."""
    out = _run_check(tmp_path=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: no GPU: nvidia-smi not found" in out.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["stages"]) == ["preflight"]
    assert summary["stages"]["preflight"]["status"] == "FAILED"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["preflight.log",
                                                                    "summary.json"]
    last = out.stdout.rstrip().splitlines()
    assert last[-1].startswith("overall: FAILED (preflight)")
    assert len(out.stdout.splitlines()) <= 100 + 20


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this machine has nvidia-smi")
@pytest.mark.parametrize("stage", ["build", "test", "sanitize", "profile", "bench"])
def test_stages_fail_cleanly_without_gpu(tmp_path, stage):
    check = gpu_check.Check(out=tmp_path, scratch=tmp_path, python=sys.executable,
                            deadline=gpu_check.time.monotonic() + 60)
    assert not gpu_check.run_stage(check, stage)
    entry = json.loads((tmp_path / "summary.json").read_text())["stages"][stage]
    assert entry["status"] == "FAILED" and entry["note"].startswith("no GPU")
    assert "FAILED: no GPU" in (tmp_path / f"{stage}.log").read_text()


def test_commands_time_out_and_are_logged(tmp_path):
    check = gpu_check.Check(out=tmp_path, scratch=tmp_path, python=sys.executable,
                            deadline=gpu_check.time.monotonic() + 60)
    check.stage_deadline = gpu_check.time.monotonic() + 60
    check.log_path = tmp_path / "x.log"
    rc, output = check.run([sys.executable, "-c", "print('hello')"])
    assert (rc, output.strip()) == (0, "hello")
    rc, _ = check.run([sys.executable, "-c", "import time; time.sleep(30)"], limit=6)
    assert rc == 124
    log = check.log_path.read_text()
    assert "hello" in log and "(exit status 124)" in log
    assert gpu_check.pytest_outcome("x\n=== 3 passed, 1 skipped in 2.0s ===\n") == \
        "3 passed, 1 skipped"


# ------------------------------------------------------------------------------------------------
# gpu_profile.py
# ------------------------------------------------------------------------------------------------
def test_short_kernel_names():
    assert gpu_profile.short_name(FORWARD) == "interpolate_kernel<0,F,T,i32>"
    assert gpu_profile.short_name(REDUCE) == "shift_grad_reduce_kernel"


def test_ncu_csv_table(tmp_path):
    csv_text = _ncu_csv([
        ("0", FORWARD, "(256, 1, 1)", "gpu__time_duration.sum", "21,504"),
        ("0", FORWARD, "(256, 1, 1)", "dram__bytes_read.sum", "14450688"),
        ("0", FORWARD, "(256, 1, 1)", "dram__bytes_write.sum", "14450688"),
        ("0", FORWARD, "(256, 1, 1)", "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum", "400"),
        ("0", FORWARD, "(256, 1, 1)", "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", "100"),
        ("0", FORWARD, "(256, 1, 1)", "some__other_metric.sum", "7"),
        ("1", REDUCE, "(32, 8, 1)", "gpu__time_duration.sum", "4032"),
        ("1", REDUCE, "(32, 8, 1)", "launch__registers_per_thread", "32"),
    ])
    launches = gpu_profile.parse_ncu_csv(csv_text)
    assert [r["kernel"] for r in launches] == ["interpolate_kernel<0,F,T,i32>",
                                               "shift_grad_reduce_kernel"]
    assert launches[0]["time"] == 21504 and launches[0]["block"] == "256"
    assert launches[1]["block"] == "32x8" and launches[1]["regs"] == 32
    table = gpu_profile.format_table(launches, "test").splitlines()
    assert table[0].startswith(gpu_profile.TABLE_TITLE) and len(table) == 5
    assert all(len(line) <= gpu_summary.WIDTH for line in table)
    assert " 21.5 " in table[2] and " 4.00 " in table[2]  # us; ld sectors per request
    assert gpu_profile.parse_ncu_csv("==ERROR== ERR_NVGPUCTRPERM\n") == []
    path = tmp_path / "ncu.csv"
    path.write_text("==WARNING== No kernels were profiled.\n")
    assert gpu_profile.table(str(path), None, "t") == 1


# ------------------------------------------------------------------------------------------------
# gpu_summary.py
# ------------------------------------------------------------------------------------------------
def test_summary_accumulates_and_stays_within_limits(tmp_path):
    out = str(tmp_path)
    gpu_summary.record(out, "preflight", "ok", 3.2, "NVIDIA H100")
    gpu_summary.record(out, "test", "FAILED", 60, "gpu: 1 failed")
    gpu_summary.record(out, "test", "ok", 61, "gpu: 80 passed")  # a rerun replaces the entry
    gpu_summary.record(out, "bench", "partial", 300, "op ok, model timeout")
    (tmp_path / "bench.json").write_text('{"suite": "op", "rows": []}')
    gpu_summary.attach(out, "bench", str(tmp_path / "bench.json"), "op")
    table = "\n".join(f"row {i} " + "x" * 200 for i in range(150))
    (tmp_path / "bench.log").write_text(f"$ python -m rubiks_jax.bench op\nop benchmark on H100\n"
                                        f"{table}\n\nwrote x\n")
    (tmp_path / "profile.log").write_text("ncu profile: t\nkernel ...\nk1 1.0\n\n")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["stages"]["test"]["status"] == "ok" and data["bench"]["op"]["suite"] == "op"
    lines = gpu_summary.summary_lines(out)
    assert len(lines) == gpu_summary.MAX_LINES
    assert all(len(line) <= gpu_summary.WIDTH for line in lines)
    text = "\n".join(lines)
    assert "ncu profile: t" in text and "op benchmark on H100" in text
    assert "more lines in bench.log" in text
    assert lines[-1] == "overall: ok (partial: bench); not run: build, sanitize, profile"
    # The op A/B table is picked up from bench.log too.
    (tmp_path / "bench.log").write_text("op A/B: per-call\nrow\n\n")
    assert "op A/B: per-call" in "\n".join(gpu_summary.summary_lines(out))


def test_summary_table_blocks_end_at_blank_lines_and_script_lines():
    text = "noise\nA benchmark on X\nr1\nr2\n\nnoise\nB benchmark on Y\nr3\n=== bench: ok\n"
    assert gpu_summary.table_blocks(text, "benchmark on ") == [
        ["A benchmark on X", "r1", "r2"], ["B benchmark on Y", "r3"]]


def test_stack_png(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    paths = []
    for i, size in enumerate([(4, 3), (2, 2)]):
        fig = plt.figure(figsize=size, dpi=50)
        paths.append(str(tmp_path / f"{i}.png"))
        fig.savefig(paths[-1])
        plt.close(fig)
    gpu_summary.stack_png(str(tmp_path / "all.png"), paths)
    image = plt.imread(str(tmp_path / "all.png"))
    assert image.shape[:2] == (150 + 100, 200)


def _op(rows):
    return {"suite": "op", "rows": [
        dict(shape=[8, 8, 56, 56, 72], dtype="float32", mode=mode, impl=impl, median_s=t * 1e-6,
             floor_s=30e-6) for mode, impl, t in rows]}


def test_op_ab_table():
    v3 = _op([("fwd", "ffi", 99.0), ("fwd", "xla", 194.0), ("bwd", "ffi", 300.0)])
    v4 = _op([("fwd", "ffi", 45.0)])
    lines = gpu_summary.ab_table(v3, v4)
    assert lines[0].startswith("op A/B")
    fwd, bwd = lines[2].split(), lines[3].split()
    assert fwd[-7:] == ["99.0", "45.0", "0.45", "194.0", "30.0", "1.50", "4.31"]
    assert bwd[-7:] == ["300.0", "-", "-", "-", "30.0", "-", "-"]  # v4 not timed there
    assert all(len(line) <= gpu_summary.WIDTH for line in lines)
