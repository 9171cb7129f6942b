"""scripts/gpu_check.sh and its helpers, on any machine: the parts that need no GPU (argument
handling, failing cleanly without a GPU, the ncu table, the summary and its limits)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_profile = _load("gpu_profile")
gpu_summary = _load("gpu_summary")
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


def _run_check(*args: str, env: dict | None = None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path / "out"),
           "GPU_CHECK_SCRATCH": str(tmp_path / "scratch"), **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------------------------
# gpu_check.sh
# ------------------------------------------------------------------------------------------------
def test_script_syntax_and_shellcheck():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


def test_no_stage_prints_usage_and_exits_2(tmp_path):
    out = _run_check(tmp_path=tmp_path)
    assert out.returncode == 2
    assert "preflight" in out.stderr and "sanitize" in out.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this machine has nvidia-smi")
def test_preflight_says_no_gpu_and_fails(tmp_path):
    out = _run_check("preflight", env={"PYTHON": sys.executable}, tmp_path=tmp_path)
    assert out.returncode != 0, out.stdout
    assert "no GPU" in out.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stages"]["preflight"]["status"] == "FAILED"
    assert out.stdout.rstrip().splitlines()[-1].startswith("overall: FAILED (preflight)")


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this machine has nvidia-smi")
@pytest.mark.parametrize("stage", ["build", "test", "sanitize", "bench", "profile"])
def test_stages_fail_cleanly_without_gpu(tmp_path, stage):
    out = _run_check(stage, env={"PYTHON": sys.executable}, tmp_path=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED: no GPU" in out.stdout
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted([f"{stage}.log", "summary.json"])


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
