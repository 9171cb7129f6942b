"""The benchmark suites end to end on their quick shapes: tables, JSON, baselines and ratios, plots.
No timing is asserted (performance figures live in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rubiks_jax.bench import __main__ as bench_main
from rubiks_jax.bench import plots
from rubiks_jax.bench.timing import time_fn
from rubiks_jax.ops import ffi_available


def _run(suite, tmp_path, capsys, *extra):
    path = tmp_path / f"{suite}.json"
    bench_main.main([suite, "--quick", "--json", str(path), *extra])
    out = capsys.readouterr().out
    assert "benchmark on" in out and f"wrote {path}" in out
    return json.loads(path.read_text()), out


def test_time_fn_uses_fresh_inputs_outside_the_clock():
    seen = []

    def make(i):
        seen.append(i)
        return (np.float32(i),)

    t = time_fn(lambda v: v * 2, make, repeats=4, warmup=2)
    assert seen == [-1, -2, 0, 1, 2, 3]  # warm-up inputs are never reused by timed repeats
    assert t.repeats == 4 and 0 < t.min_s <= t.median_s <= t.max_s


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_op_suite(tmp_path, capsys):
    result, _ = _run("op", tmp_path, capsys)
    rows = result["rows"]
    assert {(r["impl"], r["mode"], r["dtype"]) for r in rows} == {
        (i, m, d) for i in ("ffi", "xla") for m in ("fwd", "bwd", "fwd+bwd")
        for d in ("float32", "bfloat16")}
    for r in rows:
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        if r["impl"] == "xla":
            assert r["speedup_vs_xla"] == 1.0


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_op_suite_backward_mode_runs_no_forward():
    """The "bwd" entry must time the backward kernels only: XLA drops the unused forward."""
    from rubiks_jax.bench import op

    make = op._inputs(op.QUICK_SHAPE, np.float32)
    fns = op._fns("ffi")
    hlo = {m: fns[m].lower(*make(0)).compile().as_text() for m in ("bwd", "fwd+bwd")}
    assert "rubiks_shift_grad_input" in hlo["bwd"] and "rubiks_shift_grad_shift" in hlo["bwd"]
    assert "rubiks_shift_forward" not in hlo["bwd"]
    assert "rubiks_shift_forward" in hlo["fwd+bwd"]


def test_block_suite(tmp_path, capsys):
    result, out = _run("block", tmp_path, capsys, "--repeats", "2")
    rows = result["rows"]
    assert len(rows) == 3 * 2 * 2
    macs = {r["block"]: r["macs_per_clip"] for r in rows}
    params = {r["block"]: r["params"] for r in rows}
    # The layer-level cost ordering the paper reports.
    assert macs["conv3d"] > macs["tsm"] > macs["rubiks_shift"] > 0
    assert params["conv3d"] > params["tsm"] > params["rubiks_shift"] > 0
    for r in rows:
        assert r["repeats"] == 2
        if r["block"] == "rubiks_shift":
            assert r["x_rubiks_shift"] == 1.0
    assert "time / rubiks_shift" in out


def test_model_suite(tmp_path, capsys):
    result, out = _run("model", tmp_path, capsys, "--repeats", "1")
    rows = result["rows"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("RubiksNet-tiny", "TSM-ResNet50") for mode in ("train", "infer")}
    for r in rows:
        batch = r["shape"][0]
        assert r["clips_per_s"] == pytest.approx(batch / r["median_s"])
    macs = {r["model"]: r["macs_per_clip"] for r in rows}
    assert macs["TSM-ResNet50"] > macs["RubiksNet-tiny"] > 0
    assert all(r["x_baseline"] == 1.0 for r in rows if r["model"] == "TSM-ResNet50")


def test_model_suite_rejects_bad_dtype():
    with pytest.raises(SystemExit):
        bench_main.main(["model", "--dtype", "float64"])


def test_layer_costs_split_by_layer():
    costs = plots.layer_costs(frames=2, size=16, channels=8)
    assert set(costs) == {"conv3d", "tsm", "rubiks_shift"}
    assert costs["rubiks_shift"]["shift"][0] == 8 * 2 * 16 * 16 * 8  # 8 MACs per output element
    assert costs["conv3d"]["conv1"][0] == 2 * 16 * 16 * 27 * 8 * 8


def test_plots_from_suite_json(tmp_path):
    block = {"suite": "block", "machine": "test machine", "rows": [
        dict(shape=[1, 2, 8, 8, 4], dtype=d, block=b, mode=m, median_s=t, min_s=t * 0.9,
             max_s=t * 1.1, repeats=3, macs_per_clip=1, params=1, x_rubiks_shift=t / 0.001)
        for d in ("float32", "bfloat16") for m in ("fwd", "fwd+bwd")
        for b, t in (("conv3d", 0.008), ("tsm", 0.004), ("rubiks_shift", 0.001))]}
    model = {"suite": "model", "machine": "test machine", "rows": [
        dict(model=n, mode=m, shape=[2, 8, 32, 32, 3], dtype="float32", median_s=0.1, min_s=0.1,
             max_s=0.1, repeats=1, clips_per_s=20.0, macs_per_clip=g * 1e9, params=1,
             x_baseline=1.0)
        for n, g in (("RubiksNet-tiny", 3.8), ("TSM-ResNet50", 33.0)) for m in ("train", "infer")]}
    (tmp_path / "block.json").write_text(json.dumps(block))
    (tmp_path / "model.json").write_text(json.dumps(model))
    out = tmp_path / "figs"
    plots.main(["--out", str(out), "--block", str(tmp_path / "block.json"),
                "--model", str(tmp_path / "model.json"), "--prefix", "t_"])
    for name in ("layer_level.png", "t_block_latency.png", "t_model_speed.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plots_name_a_missing_json(tmp_path):
    with pytest.raises(SystemExit, match="nope.json"):
        plots.main(["--out", str(tmp_path), "--block", str(tmp_path / "nope.json")])
