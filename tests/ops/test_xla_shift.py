"""The fast pure-XLA path (impl="xla", rubiks_jax/ops/xla_shift.py) against the readable oracle
(impl="reference"), its float32 accumulation for half dtypes, its compiled form on the CPU, and its
portability (jax.export for CPU, TPU and CUDA: no custom calls). Correctness against the float64
reference and finite differences is in test_rubiks_shift.py; jit, vmap, pmap and jax.checkpoint
in test_transforms.py (both run impl="xla")."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from rubiks_jax.ops import ffi_available, ffi_kernels, rubiks_shift, xla_shift
from rubiks_jax.ops.geometry import Geometry
from tests.ops.cases import CASES, Case, make_inputs


@functools.partial(jax.jit, static_argnums=(3, 4, 5))  # one compile, not an eager op chain
def _value_and_grads(x, shift, dy, case: Case, impl: str, quantize: bool):
    y, vjp = jax.vjp(lambda a, s: rubiks_shift(a, s, stride=case.stride, padding=case.padding,
                                               quantize=quantize, impl=impl), x, shift)
    return (y, *vjp(dy))


# Every case interpolating; quantized, the cases whose shifts round differently from their floor
# (halves, negatives, past the frame).
ORACLE_CASES = ([pytest.param(c, False, id=f"{c}-interp") for c in CASES] +
                [pytest.param(c, True, id=f"{c}-quantize") for c in CASES
                 if c.shifts in ("mixed", "large")])


@pytest.mark.parametrize("case, quantize", ORACLE_CASES)
def test_matches_the_oracle(case, quantize):
    x, shift, dy = (jnp.asarray(v) for v in make_inputs(case))
    fast = _value_and_grads(x, shift, dy, case, "xla", quantize)
    oracle = _value_and_grads(x, shift, dy, case, "reference", quantize)
    for name, a, b in zip(("y", "dx", "dshift"), fast, oracle):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        # Both sum in float32, in different orders; the shift gradient over every output point.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 if name == "y" else 1e-4,
                                   err_msg=name)


def test_extreme_shifts_match_the_oracle_on_finite_channels():
    """Shifts past every frame, beyond int32 and non-finite side by side: finite channels as the
    oracle; a channel with a non-finite component gives NaN output and NaN shift gradients (as the
    kernels do)."""
    case = Case((2, 4, 5, 6, 24), stride=(1, 2, 1), padding=(1, 0, 2), shifts="extreme", seed=4)
    x, shift, dy = (jnp.asarray(v) for v in make_inputs(case))
    finite = np.isfinite(np.asarray(shift)).all(axis=1)
    assert 0 < finite.sum() < len(finite) and (np.abs(np.asarray(shift)[finite]) > 1e5).any()
    y, dx, dshift = _value_and_grads(x, shift, dy, case, "xla", False)
    y_ref, dx_ref, dshift_ref = _value_and_grads(x, shift, dy, case, "reference", False)
    np.testing.assert_allclose(y[..., finite], y_ref[..., finite], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx[..., finite], dx_ref[..., finite], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dshift[finite], dshift_ref[finite], rtol=1e-5, atol=1e-4)
    assert np.isnan(np.asarray(y)[..., ~finite]).all()
    assert np.isnan(np.asarray(dshift)[~finite]).all()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("case", CASES[:6], ids=str)
def test_half_precision_accumulates_in_float32(case, dtype):
    """Half inputs are widened on load, summed in float32 and rounded once on store: the result is
    the float32 computation on the widened inputs, rounded (a half-precision sum would not be)."""
    x, shift, dy = make_inputs(case, dtype)
    geo = Geometry(case.shape[1:4], case.stride, case.padding)
    x, shift, dy = jnp.asarray(x), jnp.asarray(shift), jnp.asarray(dy)
    x32, dy32 = x.astype(jnp.float32), dy.astype(jnp.float32)
    for quantize in (False, True):
        y = xla_shift.forward(x, shift, geo, quantize)
        dx = xla_shift.grad_input(dy, shift, geo, quantize)
        assert y.dtype == dx.dtype == dtype
        np.testing.assert_array_equal(y, xla_shift.forward(x32, shift, geo, quantize).astype(dtype))
        np.testing.assert_array_equal(dx, xla_shift.grad_input(dy32, shift, geo,
                                                               quantize).astype(dtype))
    dshift = xla_shift.grad_shift(x, dy, shift, geo)
    assert dshift.dtype == jnp.float32
    np.testing.assert_allclose(dshift, xla_shift.grad_shift(x32, dy32, shift, geo), rtol=1e-6,
                               atol=1e-6)


# --- compiled form on the CPU --------------------------------------------------------------------
def _large_passes(hlo: str, elements: int) -> list[str]:
    """Opcodes of the top-level instructions of compiled HLO that write an array of at least
    `elements` elements, in any shape (a tuple counts once per such array), less those that move
    no data (parameters, bitcasts, tuple elements)."""
    entry = hlo[hlo.index("\nENTRY"):]
    found = []
    for result, opcode in re.findall(r"^\s*(?:ROOT )?%\S+ = (.*?) ([\w\-]+)\(", entry, re.M):
        if opcode in ("parameter", "get-tuple-element", "bitcast", "tuple"):
            continue
        for dims in re.findall(r"[a-z]\w*\[([\d,]*)\]", result):
            if np.prod([int(d) for d in dims.split(",") if d]) >= elements:
                found.append(opcode)
    return found


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's fusion")
@pytest.mark.parametrize("stride, padding", [((1, 1, 1), (0, 0, 0)), ((1, 2, 2), (0, 1, 1))])
def test_each_call_is_one_pass_on_the_cpu(stride, padding):
    """The forward and the input gradient are one fused loop over their output (no tensor per axis
    or per corner), the shift gradient writes nothing of x's or y's size, and all three in one
    program (as in a training step) stay those passes: the forward's corner gathers of x are not
    shared with the shift gradient's (XLA would write all 8, or their indices, to memory)."""
    shape = (2, 4, 8, 8, 16)
    geo = Geometry(shape[1:4], stride, padding)
    out = (shape[0], *geo.out_size, shape[-1])
    # Half the smaller tensor: more than any row sum of the shift gradient (1/16 of y or less).
    large = min(np.prod(shape), np.prod(out)) // 2
    x = jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    dy = jax.ShapeDtypeStruct(out, jnp.bfloat16)
    s = jax.ShapeDtypeStruct((shape[-1], 3), jnp.float32)

    def passes(fn, *args) -> list[str]:
        return _large_passes(jax.jit(fn).lower(*args).compile().as_text(), large)

    assert passes(lambda a, b: xla_shift.forward(a, b, geo, True), x, s) == ["fusion"]
    assert passes(lambda a, b: xla_shift.grad_input(a, b, geo, True), dy, s) == ["fusion"]
    assert passes(lambda a, b, c: xla_shift.grad_shift(a, b, c, geo), x, dy, s) == []

    def fwd_bwd(a, b, c):  # unquantized: the forward and the shift gradient read the same corners
        return (xla_shift.forward(a, b, geo, False), xla_shift.grad_input(c, b, geo, False),
                xla_shift.grad_shift(a, c, b, geo))

    assert passes(fwd_bwd, x, s, dy) == ["fusion", "fusion"]


def test_int32_index_limit_is_checked():
    x = jax.ShapeDtypeStruct((1, 1024, 1024, 1024, 2), jnp.bfloat16)
    s = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"T\*H\*W\*C of one batch element must be below 2\^31"):
        jax.eval_shape(lambda a, b: rubiks_shift(a, b, impl="xla"), x, s)


# --- portability ---------------------------------------------------------------------------------
def _training_step(impl: str):
    """(x, shift) -> (loss, (dx, dshift)) for x (2, 4, 8, 8, 16) bfloat16, shift (16, 3)."""

    def loss(a, b):
        y = rubiks_shift(a, b, stride=(1, 2, 2), padding=(0, 1, 1), quantize=True, impl=impl)
        return jnp.sum(y.astype(jnp.float32))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _exported_training_step(impl: str, platforms: tuple[str, ...], **kwargs) -> export.Exported:
    x = jax.ShapeDtypeStruct((2, 4, 8, 8, 16), jnp.bfloat16)
    s = jax.ShapeDtypeStruct((16, 3), jnp.float32)
    return export.export(_training_step(impl), platforms=platforms, **kwargs)(x, s)


def _custom_calls(exported: export.Exported) -> set[str]:
    return set(re.findall(r"custom_call\s*@([\w.]+)", exported.mlir_module()))


@pytest.mark.parametrize("platforms", [("cpu",), ("tpu",), ("cuda",), ("cpu", "tpu", "cuda")],
                         ids="+".join)
def test_exports_without_custom_calls(platforms):
    """Lowering only (no TPU or GPU needed): plain StableHLO, no custom call of any kind (neither
    the FFI targets nor a platform-specific library call), so one artifact serves every platform."""
    exported = _exported_training_step("xla", platforms)
    text = exported.mlir_module()
    assert exported.platforms == platforms
    assert "stablehlo.gather" in text and "stablehlo.reduce" in text
    assert _custom_calls(exported) == set() and "stablehlo.custom_call" not in text


@pytest.mark.skipif(not ffi_available(), reason="compiled kernels not installed")
def test_custom_call_check_sees_the_ffi_targets():
    """The check above is not vacuous: the same export with impl="ffi" shows the kernels' calls."""
    targets = {ffi_kernels.FORWARD, ffi_kernels.GRAD_INPUT, ffi_kernels.GRAD_SHIFT}
    exported = _exported_training_step(
        "ffi", ("cpu",),
        disabled_checks=[export.DisabledSafetyCheck.custom_call(t) for t in targets])
    assert _custom_calls(exported) == targets and "stablehlo.custom_call" in exported.mlir_module()


def test_exported_artifact_runs_after_serialization():
    exported = _exported_training_step("xla", ("cpu", "tpu"))
    restored = export.deserialize(exported.serialize())
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 8, 8, 16)), jnp.bfloat16)
    s = jnp.asarray(rng.uniform(-2, 2, (16, 3)), jnp.float32)
    value, (dx, ds) = restored.call(x, s)
    expected_value, (expected_dx, expected_ds) = _training_step("xla")(x, s)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_allclose(ds, expected_ds, rtol=1e-6, atol=1e-6)
