"""The CUDA kernels' own bodies (thread index mapping, w segments, 32- and 64-bit offsets, v4's
staged tiles, the shift gradient's chunked pass 1 and block-reduced pass 2), run on the host over
the grid the CUDA handlers launch, against the scalar CPU kernels bit for bit (the CPU's vectorised
kernels are checked against those in test_cpu_simd.py). Only the hardware stays untested here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import ffi_kernels
from rubiks_jax.ops.geometry import Geometry
from tests.ops.cases import KERNEL_CASES, Case, make_inputs

pytestmark = [pytest.mark.kernels, pytest.mark.skipif(
    not (ffi_kernels.available() and ffi_kernels.cuda_emulation_built()),
    reason="CPU kernels or their CUDA emulation module not built")]

@pytest.fixture(autouse=True)
def scalar_cpu_kernels():
    """The scalar CPU kernels: the per-point arithmetic the CUDA kernels share."""
    ffi_kernels.set_cpu_simd(False)
    yield
    ffi_kernels.set_cpu_simd(True)


def _attrs(case: Case, **extra) -> dict:
    return dict(ffi_kernels._attrs(Geometry(case.shape[1:4], case.stride, case.padding)), **extra)


def _emulated(x, shift, dy, case: Case, quantize: bool, force_64bit: bool, version: int):
    geo = Geometry(case.shape[1:4], case.stride, case.padding)
    n, c = x.shape[0], x.shape[-1]
    y = jax.ffi.ffi_call("rubiks_shift_forward_cuda_emulation",
                         jax.ShapeDtypeStruct((n, *geo.out_size, c), x.dtype))(
        x, shift, quantize=quantize, force_64bit=force_64bit, version=np.int64(version),
        **_attrs(case))
    dx = jax.ffi.ffi_call("rubiks_shift_grad_input_cuda_emulation",
                          jax.ShapeDtypeStruct(x.shape, x.dtype))(
        dy, shift, quantize=quantize, force_64bit=force_64bit, version=np.int64(version),
        **_attrs(case))
    chunks = ffi_kernels.reduction_chunks(n, geo)
    dshift, _ = jax.ffi.ffi_call(
        "rubiks_shift_grad_shift_cuda_emulation",
        (jax.ShapeDtypeStruct((c, 3), jnp.float32),
         jax.ShapeDtypeStruct((chunks, c, 3), jnp.float32)))(
        x, dy, shift, force_64bit=force_64bit, **_attrs(case))
    return y, dx, dshift


def _cpu(x, shift, dy, case: Case, quantize: bool):
    geo = Geometry(case.shape[1:4], case.stride, case.padding)
    return (ffi_kernels.forward(x, shift, geo, quantize),
            ffi_kernels.grad_input(dy, shift, geo, quantize),
            ffi_kernels.grad_shift(x, dy, shift, geo))


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def _compare(case: Case, dtype, quantize: bool, force_64bit: bool, version: int = 3,
             shift=None):
    x, case_shift, dy = (jnp.asarray(v) for v in make_inputs(case, dtype))
    shift = case_shift if shift is None else jnp.asarray(shift, jnp.float32)
    emulated = _emulated(x, shift, dy, case, quantize, force_64bit, version)
    expected = _cpu(x, shift, dy, case, quantize)
    for name, e, c in zip(("y", "dx", "dshift"), emulated, expected):
        assert e.shape == c.shape and e.dtype == c.dtype, name
        # Bit for bit: an element no thread wrote keeps the emulation's sentinel NaN (all ones),
        # which differs from every value the CPU kernels write, NaNs included.
        mismatched = int(np.sum(_bits(e) != _bits(c)))
        assert mismatched == 0, f"{name}: {mismatched} of {np.size(c)} elements differ"


VERSIONS = pytest.mark.parametrize("version", [3, 4], ids=["v3", "v4"])


@VERSIONS
@pytest.mark.parametrize("quantize", [False, True], ids=["fractional", "quantized"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_emulated_cuda_kernels_match_cpu_bit_for_bit(case, dtype, quantize, version):
    _compare(case, dtype, quantize, force_64bit=False, version=version)


@VERSIONS
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=str)
def test_emulated_64bit_offset_kernels_match_cpu_bit_for_bit(case, dtype, version):
    """The variants for tensors of 2^31 elements or more, forced on small tensors."""
    _compare(case, dtype, quantize=False, force_64bit=True, version=version)


def _tiled_shift(channels: int, spreads: list[float], seed: int) -> np.ndarray:
    """(C, 3) shifts uniform in [-s, s) for the k-th tile of 32 channels, s = spreads[k]: tiles whose
    offsets fit v4's stage beside tiles that do not."""
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.uniform(-spreads[min(c // 32, len(spreads) - 1)],
                                    spreads[min(c // 32, len(spreads) - 1)], (1, 3))
                        for c in range(channels)])
    return s.astype(np.float32)


# v4's tiles: rows and columns at every edge of the tensor (H not a multiple of the 8-row tile, W
# not of the 8-point one), C not a multiple of 32, padding (staged positions outside the source),
# strides in t and h (staged) and in w (too wide to stage: v3's walk), integer offsets (weight-0
# corners), and per-tile spreads that fit the stage beside ones that do not (spread 1: offsets in
# {-1, 0}; 3: {-3, ..., 2}; 40: far beyond the staged range).
V4_CASES = [
    (Case((2, 3, 9, 37, 40), seed=31), [1.0, 1.0]),
    (Case((1, 4, 7, 20, 70), padding=(1, 2, 2), seed=32), [1.0, 3.0, 40.0]),
    (Case((1, 6, 8, 18, 35), stride=(2, 2, 1), padding=(1, 0, 0), seed=33), [1.0, 0.5]),
    (Case((2, 3, 6, 19, 33), stride=(1, 1, 2), seed=34), [1.0, 1.0]),
    (Case((1, 3, 6, 19, 32), padding=(0, 1, 1), shifts="integer", seed=35), None),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case,spreads", V4_CASES, ids=[str(c) for c, _ in V4_CASES])
def test_emulated_v4_tiles_match_cpu_bit_for_bit(case, spreads, dtype):
    shift = None if spreads is None else _tiled_shift(case.shape[-1], spreads, case.seed)
    if spreads is None:  # integers in {-1, 0, 1}: a spread the stage holds
        shift = np.clip(make_inputs(case)[1], -1, 1)
    _compare(case, dtype, quantize=False, force_64bit=False, version=4, shift=shift)
    _compare(case, dtype, quantize=True, force_64bit=False, version=4, shift=shift)


def test_emulation_sentinel_reveals_unwritten_elements():
    """The comparison above can fail: an element the CPU writes differs from the sentinel."""
    case = KERNEL_CASES[0]
    x, shift, dy = (jnp.asarray(v) for v in make_inputs(case))
    y_cpu = _cpu(x, shift, dy, case, False)[0]
    sentinel = np.full(np.shape(y_cpu), 0xFFFFFFFF, np.uint32)
    assert np.all(_bits(y_cpu) != sentinel)
