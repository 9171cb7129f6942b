"""The CPU kernels' vectorised paths, AVX-512 and AVX2, each where this CPU has it (forward, input
and shift gradients at w stride 1) against their scalar path: the forward and the input gradient
bit for bit (they keep the scalar arithmetic), the shift gradient (whose sums run in another order)
to float32 rounding, reproducibly. The forward and the input gradient have two vectorised kernels
(channels last where the shifts allow, transposing elsewhere): both are reached and give the same
bits."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import ffi_kernels
from rubiks_jax.ops.geometry import Geometry
from tests.ops import reference
from tests.ops.cases import KERNEL_CASES, Case, make_inputs

pytestmark = [pytest.mark.kernels, pytest.mark.skipif(
    not (ffi_kernels.available() and ffi_kernels.cpu_simd_supported()),
    reason="CPU kernels not built, or this CPU has neither AVX2 nor AVX-512")]

ISAS = ffi_kernels.cpu_simd_isas() if ffi_kernels.available() else ()


@pytest.fixture(params=ISAS or ["none"])
def isa(request) -> str:
    """Every vector instruction set this CPU runs (AVX2 also on an AVX-512 CPU)."""
    return request.param


def _run(case: Case, dtype, quantize: bool, simd: str, channels_last: bool = True,
         stream: bool | None = None):
    """y, dx and dshift of `case` with the kernels capped at `simd` ("scalar", "avx2", "avx512");
    `stream`: outputs written with streaming (True) or plain (False) stores, None: by size."""
    assert ffi_kernels.set_cpu_simd(simd) == simd
    ffi_kernels.set_cpu_channels_last(channels_last)
    if stream is not None:
        default = ffi_kernels.set_cpu_stream_min_bytes(0 if stream else 1 << 62)
    try:
        x, shift, dy = (jnp.asarray(v) for v in make_inputs(case, dtype))
        geo = Geometry(case.shape[1:4], case.stride, case.padding)
        return (np.asarray(ffi_kernels.forward(x, shift, geo, quantize)),
                np.asarray(ffi_kernels.grad_input(dy, shift, geo, quantize)),
                np.asarray(ffi_kernels.grad_shift(x, dy, shift, geo)))
    finally:
        ffi_kernels.set_cpu_simd(True)
        ffi_kernels.set_cpu_channels_last(True)
        if stream is not None:
            ffi_kernels.set_cpu_stream_min_bytes(default)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


@pytest.mark.parametrize("quantize", [False, True], ids=["fractional", "quantized"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_simd_matches_scalar_kernels(case, dtype, quantize, isa):
    y, dx, dshift = _run(case, dtype, quantize, simd=isa)
    y_ref, dx_ref, dshift_ref = _run(case, dtype, quantize, simd="scalar")
    for name, a, b in (("y", y, y_ref), ("dx", dx, dx_ref)):
        mismatched = int(np.sum(_bits(a) != _bits(b)))
        assert mismatched == 0, f"{name}: {mismatched} of {a.size} elements differ"
    # The shift gradient: the same NaN channels, and float32 sums over every output point that
    # differ only in their order.
    np.testing.assert_array_equal(np.isnan(dshift), np.isnan(dshift_ref))
    finite = ~np.isnan(dshift)
    scale = max(1.0, float(np.max(np.abs(dshift_ref[finite]), initial=0.0)))
    np.testing.assert_allclose(dshift[finite], dshift_ref[finite], rtol=0, atol=2e-5 * scale)


UNIT_W_CASES = [c for c in KERNEL_CASES if c.stride[2] == 1]


@pytest.mark.parametrize("quantize", [False, True], ids=["fractional", "quantized"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", UNIT_W_CASES, ids=str)
def test_channels_last_and_transposing_kernels_agree(case, dtype, quantize, isa):
    channels_last = _run(case, dtype, quantize, simd=isa, channels_last=True)
    transposing = _run(case, dtype, quantize, simd=isa, channels_last=False)
    for name, a, b in zip(("y", "dx"), channels_last, transposing):
        mismatched = int(np.sum(_bits(a) != _bits(b)))
        assert mismatched == 0, f"{name}: {mismatched} of {a.size} elements differ"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "transposing"])
@pytest.mark.parametrize("case", UNIT_W_CASES, ids=str)
def test_streaming_and_plain_stores_agree(case, dtype, channels_last, isa):
    """Both ways out for y and dx (streaming stores for large outputs, plain ones for small) give
    the same bits; the test cases are small, so the comparison above checks the plain stores."""
    streamed = _run(case, dtype, False, simd=isa, channels_last=channels_last, stream=True)
    plain = _run(case, dtype, False, simd=isa, channels_last=channels_last, stream=False)
    for name, a, b in zip(("y", "dx"), streamed, plain):
        mismatched = int(np.sum(_bits(a) != _bits(b)))
        assert mismatched == 0, f"{name}: {mismatched} of {a.size} elements differ"


def test_stream_threshold_defaults_to_4_mib():
    previous = ffi_kernels.set_cpu_stream_min_bytes(123)
    try:
        assert previous == 4 << 20
        assert ffi_kernels.set_cpu_stream_min_bytes(previous) == 123
    finally:
        ffi_kernels.set_cpu_stream_min_bytes(previous)


def _ran_channels_last(case: Case, isa: str, allowed: bool = True) -> bool:
    before = ffi_kernels.cpu_channels_last_calls()
    _run(case, jnp.float32, False, simd=isa, channels_last=allowed)
    calls = ffi_kernels.cpu_channels_last_calls() - before
    assert calls in (0, 2), calls  # the forward and the input gradient plan alike
    return calls == 2


def test_both_kernels_are_reached(isa):
    """Shifts within (-1, 1) give each vector's channels at most two sources per corner: channels
    last. Wider spreads across a vector's channels (integers from -3 to 3, large shifts) fall back
    to the transposing kernel, and so does every case with the switch off."""
    reached = {c: _ran_channels_last(c, isa) for c in UNIT_W_CASES}
    assert all(ran for c, ran in reached.items() if c.shifts in ("uniform", "zero"))
    assert any(not ran for c, ran in reached.items() if c.shifts == "large" and c.shape[-1] > 1)
    assert not any(_ran_channels_last(c, isa, allowed=False) for c in UNIT_W_CASES)


@pytest.mark.parametrize("case", UNIT_W_CASES[:4], ids=str)
def test_simd_shift_gradient_matches_float64_reference(case, isa):
    x, shift, dy = make_inputs(case)
    dshift = _run(case, jnp.float32, False, simd=isa)[2]
    expected = reference.grad_shift(x, dy, shift, case.stride, case.padding)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(dshift, expected, rtol=0, atol=5e-5 * scale)


def test_simd_path_is_taken(isa):
    """The comparison above can fail: at w stride 1 the vectorised shift gradient sums in another
    order than the scalar kernels (and AVX2 in another than AVX-512), so some bits differ."""
    case = Case((2, 4, 6, 40, 24), shifts="uniform", seed=3)
    simd = _run(case, jnp.float32, False, simd=isa)[2]
    scalar = _run(case, jnp.float32, False, simd="scalar")[2]
    assert np.any(_bits(simd) != _bits(scalar))
    if len(ISAS) == 2:
        other = _run(case, jnp.float32, False, simd=ISAS[1] if isa == ISAS[0] else ISAS[0])[2]
        assert np.any(_bits(simd) != _bits(other))


def test_simd_shift_gradient_is_reproducible(isa):
    case = KERNEL_CASES[0]
    first = _run(case, jnp.float32, False, simd=isa)[2]
    for _ in range(3):
        np.testing.assert_array_equal(_bits(_run(case, jnp.float32, False, simd=isa)[2]),
                                      _bits(first))


def test_set_cpu_simd_caps_and_rejects_unknown_names():
    assert ffi_kernels.set_cpu_simd(False) == "scalar"
    assert ffi_kernels.cpu_simd_isa() == "scalar"
    assert ffi_kernels.set_cpu_simd(True) == ISAS[0]
    assert ffi_kernels.set_cpu_simd("avx2") == "avx2"  # every vectorised CPU has AVX2
    ffi_kernels.set_cpu_simd(True)
    with pytest.raises(ValueError, match="isa must be"):
        ffi_kernels.set_cpu_simd("sse9")
