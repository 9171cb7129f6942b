"""The benchmark suites end to end on their quick shapes: tables, JSON, baselines and ratios, plots.
No timing is asserted (performance figures live in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.bench import __main__ as bench_main
from rubiks_jax.bench import plots
from rubiks_jax.bench.timing import loop_calls, time_fn, time_per_call
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


def test_time_per_call_calibrates_iters_and_divides_by_them():
    seen = []

    def make(i):
        seen.append(i)
        return (jnp.full((4,), float(i)),)

    # A target no sample reaches: K grows from 1 to max_iters (a multiple of calls_per_trip), where
    # calibration stops; each round runs twice untimed (compile and warm-up, then the estimate).
    t = time_per_call(lambda c: (c[0] * 0.5,), make, repeats=3, target_s=60.0, calls_per_trip=2,
                      max_iters=10, max_rounds=3)
    assert t.iters == 10 and t.repeats == 3
    assert seen == [-1, -2, -3, -4, 0, 1, 2]  # calibration inputs are never reused by samples
    assert 0 < t.min_s <= t.median_s <= t.max_s
    assert t.sample_median_s == pytest.approx(t.median_s * t.iters)
    # A target every sample reaches: K stays 1, one calibration round.
    seen.clear()
    t = time_per_call(lambda c: (c[0] * 0.5,), make, repeats=2, target_s=0.0)
    assert t.iters == 1 and seen == [-1, -2, 0, 1]


def test_loop_calls_rejects_iters_that_do_not_fill_trips():
    with pytest.raises(ValueError, match="multiple"):
        loop_calls(lambda c: c, 3, calls_per_trip=2)
    loop_calls(lambda c: c, 1, calls_per_trip=2)  # a single call needs no loop


# --- compiled-HLO checks of the op suite's timing loops ------------------------------------------
def _computations(hlo: str) -> dict[str, str]:
    """Compiled HLO text -> {computation name: its text}."""
    comps = {}
    for m in re.finditer(r"^(?:ENTRY )?%(\S+) [^\n]*\{\n(.*?)^\}", hlo, re.S | re.M):
        comps[m.group(1)] = m.group(2)
    return comps


def _the_loop(hlo: str) -> tuple[int, str]:
    """(known trip count, body text) of the module's only while loop."""
    whiles = re.findall(r"while\(.*?body=%([\w.\-]+).*?\"known_trip_count\":\{\"n\":\"(\d+)\"", hlo)
    assert len(whiles) == 1, whiles
    body, trips = whiles[0]
    return int(trips), _computations(hlo)[body]


def _full_size_work(text: str, shape: tuple[int, ...]) -> list[str]:
    """Opcodes of the instructions in `text` that produce an (N, T, H, W, C)-shaped array, less
    those that move no data (parameters, tuple elements, bitcasts)."""
    dims = ",".join(map(str, shape))
    ops = re.findall(r"= \w+\[" + dims + r"\]\{[\d,]*\} ([\w\-]+)\(", text)
    return [o for o in ops if o not in ("parameter", "get-tuple-element", "bitcast")]


_KERNELS = {"fwd": ("rubiks_shift_forward",),
            "bwd": ("rubiks_shift_grad_input", "rubiks_shift_grad_shift"),
            "fwd+bwd": ("rubiks_shift_forward", "rubiks_shift_grad_input",
                        "rubiks_shift_grad_shift")}


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", list(_KERNELS))
def test_op_timing_loop_runs_each_kernel_once_per_call(mode, dtype):
    """The loop the op suite times: K calls make a while of K/2 trips with two calls of each kernel
    in its body and nothing outside it (no call hoisted or merged), and beside the kernels only
    (C, 3)-sized work: no copy or other pass over a full-size tensor (so loop time / K is the
    kernels' time)."""
    from rubiks_jax.bench import op

    iters = 6
    make = op._inputs(op.QUICK_SHAPE, getattr(jnp, dtype))
    assert op.CALLS_PER_TRIP["ffi"] == 2
    hlo = loop_calls(op._steps("ffi")[mode], iters, 2).lower(make(0)).compile().as_text()
    trips, body = _the_loop(hlo)
    assert trips == iters // 2
    for kernel in ("rubiks_shift_forward", "rubiks_shift_grad_input", "rubiks_shift_grad_shift"):
        per_trip = 2 if kernel in _KERNELS[mode] else 0
        target = f'custom_call_target="{kernel}"'
        assert body.count(target) == hlo.count(target) == per_trip, kernel
    assert set(_full_size_work(body, op.QUICK_SHAPE)) == {"custom-call"}
    entry = _computations(hlo)[re.search(r"^ENTRY %(\S+)", hlo, re.M).group(1)]
    assert not _full_size_work(entry, op.QUICK_SHAPE)  # the donated inputs are not copied in


@pytest.mark.parametrize("impl, mode", [("xla", "fwd"), ("xla", "bwd"), ("xla", "fwd+bwd"),
                                        ("reference", "fwd"), ("reference", "fwd+bwd")])
def test_pure_xla_timing_loop_hoists_nothing(impl, mode):
    """The pure-XLA entries: one call per trip (XLA:CPU would fuse two calls into one program),
    K trips, and nothing computed outside the loop. (The shift changes every call so that no
    backend can hoist the op's shift-only work, its full-size gather indices; XLA:CPU would not
    hoist it anyway.)"""
    from rubiks_jax.bench import op

    assert mode in op.MODES[impl]
    make = op._inputs(op.QUICK_SHAPE, jnp.float32)
    hlo = loop_calls(op._steps(impl)[mode], 3, op.CALLS_PER_TRIP[impl]).lower(
        make(0)).compile().as_text()
    trips, body = _the_loop(hlo)
    computations = _computations(hlo)
    called = [computations[name] for name in re.findall(r"calls=%([\w.\-]+)", body)]
    assert trips == 3 and any(" gather(" in text for text in [body, *called])  # the op is inside
    outside = [text for text in computations.values() if "while(" in text]
    work = {op_name for text in outside for op_name in re.findall(r"= [^ ]+ ([\w\-]+)\(", text)}
    assert outside and work <= {"parameter", "constant", "copy", "tuple", "get-tuple-element",
                                "while"}, work
    assert not any(_full_size_work(text, op.QUICK_SHAPE) for text in outside)  # no input copied


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_op_suite_backward_mode_runs_no_forward():
    """The "bwd" entry must time the backward kernels only: XLA drops the unused forward."""
    from rubiks_jax.bench import op

    make = op._inputs(op.QUICK_SHAPE, np.float32)
    hlo = {m: loop_calls(op._steps("ffi")[m], 4).lower(make(0)).compile().as_text()
           for m in ("bwd", "fwd+bwd")}
    assert "rubiks_shift_grad_input" in hlo["bwd"] and "rubiks_shift_grad_shift" in hlo["bwd"]
    assert "rubiks_shift_forward" not in hlo["bwd"]
    assert "rubiks_shift_forward" in hlo["fwd+bwd"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_op_floor_negates_by_the_sign_bit(dtype):
    """The floor's x -> -x on the bits gives -x exactly, signed zeros, infinities and NaN too."""
    from rubiks_jax.bench import op

    x = jnp.asarray(np.array([0.0, -0.0, 1.5, -2.25, 3e-5, np.inf, -np.inf, np.nan, 65000.0],
                             np.float32)).astype(dtype)
    got = np.asarray(op._negate_bits(x))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.view(np.uint8), np.asarray(-x).view(np.uint8))


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_op_inplace_floor_loop_is_one_pass_per_call():
    """The in-place pass: one elementwise pass over x per call, one call per trip (two would be
    fused into one pass), in place, no copy."""
    from rubiks_jax.bench import op

    make = op._inputs(op.QUICK_SHAPE, jnp.float32)
    assert op.CALLS_PER_TRIP["inplace"] == 1
    hlo = loop_calls(op._inplace_step, 5, calls_per_trip=1).lower(make(0)).compile().as_text()
    trips, body = _the_loop(hlo)
    assert trips == 5
    assert _full_size_work(body, op.QUICK_SHAPE) == ["fusion"]


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
@pytest.mark.parametrize("streaming", [True, False])
def test_op_out_of_place_floor_loop_is_one_pass_per_call(streaming):
    """The CPU floor's pass: two stream_negate calls per trip, each writing a buffer other than
    its input (no copy, nothing else over a full-size tensor), like the kernels' loop."""
    from rubiks_jax.bench import op

    make = op._inputs(op.QUICK_SHAPE, jnp.float32)
    assert op.CALLS_PER_TRIP["stream"] == op.CALLS_PER_TRIP["plain"] == 2
    hlo = loop_calls(op._out_of_place_step(streaming), 6, calls_per_trip=2).lower(
        make(0)).compile().as_text()
    trips, body = _the_loop(hlo)
    assert trips == 3
    assert body.count('custom_call_target="rubiks_jax_stream_negate"') == 2
    assert set(_full_size_work(body, op.QUICK_SHAPE)) == {"custom-call"}


@pytest.mark.kernels
@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("size", [1, 7, 33, 4099, 300_001])
def test_stream_negate_is_minus_x(dtype, streaming, size):
    """The out-of-place floor pass gives -x bit for bit (odd sizes: the scalar head and tail
    around the vector lines), into a new buffer, x unchanged."""
    from rubiks_jax.ops import ffi_kernels

    rng = np.random.default_rng(size)
    x_np = rng.standard_normal(size).astype(np.float32)
    x_np[: min(size, 4)] = [0.0, -0.0, np.inf, np.nan][: min(size, 4)]
    x = jnp.asarray(x_np).astype(dtype)
    before = np.asarray(x).copy()
    got = np.asarray(jax.jit(ffi_kernels.stream_negate, static_argnums=1)(x, streaming))
    np.testing.assert_array_equal(got.view(np.uint8), np.asarray(-x).view(np.uint8))
    np.testing.assert_array_equal(np.asarray(x).view(np.uint8), before.view(np.uint8))


@pytest.mark.kernels
@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_stream_negate_rejects_integer_input():
    from rubiks_jax.ops import ffi_kernels

    with pytest.raises(Exception, match="x must be float16, bfloat16, float32 or float64"):
        jax.block_until_ready(ffi_kernels.stream_negate(jnp.arange(8, dtype=jnp.int32)))


@pytest.mark.skipif(not ffi_available(), reason="kernels not built")
def test_op_suite(tmp_path, capsys):
    from rubiks_jax.bench import op

    result, out = _run("op", tmp_path, capsys)
    rows = result["rows"]
    modes = ("fwd", "bwd", "fwd+bwd")
    assert {(r["impl"], r["mode"], r["dtype"]) for r in rows} == {
        (i, m, d) for i in ("ffi", "xla", "reference") for m in modes
        for d in ("float32", "bfloat16") if i != "reference" or m != "bwd"}
    by_key = {(r["impl"], r["mode"], r["dtype"]): r for r in rows}
    for r in rows:
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["iters"] == 1 or r["iters"] % op.CALLS_PER_TRIP[r["impl"]] == 0
        assert r["sample_median_s"] == pytest.approx(r["median_s"] * r["iters"])
        assert r["floor_iters"] >= 1 and r["floor_kind"] in ("stream", "plain")
        assert set(r["floor_passes_gbps"]) == {"stream", "plain", "inplace"}
        assert r["floor_gbps"] == pytest.approx(max(r["floor_passes_gbps"][k]
                                                    for k in ("stream", "plain")))
        assert r["repeats"] == (3 if r["impl"] != "reference" else op.REFERENCE_REPEATS)
        # Each ratio is the named baseline's time over the row's, same shape, dtype and mode.
        for baseline in ("xla", "reference"):
            base = by_key.get((baseline, r["mode"], r["dtype"]))
            expected = None if base is None else base["median_s"] / r["median_s"]
            assert r[f"speedup_vs_{baseline}"] == expected
    assert by_key[("ffi", "bwd", "float32")]["speedup_vs_reference"] is None
    assert "per-call device time" in out and "speedup vs X = median time of impl X" in out


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


@pytest.mark.slow
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
