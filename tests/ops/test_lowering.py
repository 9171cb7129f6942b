"""The CUDA build and the op's lowering for CUDA, checked on a machine without a GPU."""

from __future__ import annotations

import re
import shutil

import jax
import jax.numpy as jnp
import pytest
from jax import export

from rubiks_jax.ops import ffi_kernels, rubiks_shift

pytestmark = pytest.mark.kernels

TARGETS = {ffi_kernels.FORWARD, ffi_kernels.GRAD_INPUT, ffi_kernels.GRAD_SHIFT}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: CUDA module not built")
def test_cuda_module_built_and_exposes_handlers():
    """setup.py builds the CUDA module whenever nvcc is found; it must link and load without a GPU."""
    module = ffi_kernels.kernel_module("_rubiks_shift_cuda")
    registrations = module.registrations()
    assert set(registrations) == TARGETS
    assert ffi_kernels.cuda_built()


@pytest.mark.parametrize("module, suffix", [("_rubiks_shift_cpu", ""),
                                             ("_rubiks_shift_cuda_emulation", "_cuda_emulation")])
def test_host_modules_expose_the_python_target_names(module, suffix):
    """The C++ target names (rubiks_shift_ffi.h) and the Python ones (ffi_kernels) agree."""
    registrations = ffi_kernels.kernel_module(module).registrations()
    assert set(registrations) == {name + suffix for name in TARGETS}


def test_cpu_module_exposes_the_python_floor_target_name():
    """The benchmark's floor pass: its C++ name (rubiks_shift_ffi.h) is the Python one."""
    registrations = ffi_kernels.kernel_module("_rubiks_shift_cpu").bench_registrations()
    assert set(registrations) == {ffi_kernels.STREAM_NEGATE}


@pytest.mark.parametrize("platform", ["cuda", "cpu"])
def test_op_lowers_to_the_ffi_targets(platform):
    x = jax.ShapeDtypeStruct((2, 4, 8, 8, 16), jnp.bfloat16)
    s = jax.ShapeDtypeStruct((16, 3), jnp.float32)

    def loss(a, b):
        y = rubiks_shift(a, b, stride=(1, 2, 2), padding=(0, 1, 1), quantize=True, impl="ffi")
        return jnp.sum(y.astype(jnp.float32))

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    exported = export.export(
        fn, platforms=(platform,),
        disabled_checks=[export.DisabledSafetyCheck.custom_call(t) for t in TARGETS])(x, s)
    text = exported.mlir_module()
    assert set(re.findall(r"custom_call @(\w+)", text)) == TARGETS
    assert "stride_h = 2 : i64" in text and "quantize = true" in text
