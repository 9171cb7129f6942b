"""The RubiksShift op, its implementations, and the zero-FLOP integer shift."""

from rubiks_jax.ops.ffi_kernels import available as ffi_available
from rubiks_jax.ops.ffi_kernels import cuda_built
from rubiks_jax.ops.integer_shift import integer_shift
from rubiks_jax.ops.rubiks_shift import IMPLS, rubiks_shift

__all__ = ["IMPLS", "cuda_built", "ffi_available", "integer_shift", "rubiks_shift"]
