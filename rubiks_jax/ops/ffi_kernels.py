"""Bindings of the XLA FFI kernels (`impl="ffi"`): registration and the three calls.

The compiled modules `rubiks_jax._rubiks_shift_cpu` and (when built with nvcc)
`rubiks_jax._rubiks_shift_cuda` hand out handler capsules; each target name is registered for the
`cpu` and `CUDA` platforms, so one `ffi_call` lowers for either.

RUBIKS_JAX_KERNELS_DIR=DIR loads the compiled modules from DIR instead of the package (e.g. the
Bazel build's bazel_out/kernels/, which scripts/bazel_build.sh fills): only DIR is searched, so a
module missing there counts as not built even when the package has one.

Every call takes rank-5 (N, T, H, W, C) arrays and is one kernel launch; partitioning.py adds the
vmap and sharding rules (for these calls and impl="xla" alike).
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.ops.geometry import Geometry

FORWARD = "rubiks_shift_forward"
GRAD_INPUT = "rubiks_shift_grad_input"
GRAD_SHIFT = "rubiks_shift_grad_shift"
TARGETS = (FORWARD, GRAD_INPUT, GRAD_SHIFT)

# The shift gradient's deterministic reduction sums chunks of about POINTS_PER_CHUNK output points
# (one GPU thread per chunk and channel), at most MAX_REDUCTION_CHUNKS of them (its scratch is
# chunks x C x 3 float32). The chunking depends only on the shape, so results are bit-reproducible
# and the same on every platform.
POINTS_PER_CHUNK = 32
MAX_REDUCTION_CHUNKS = 4096

# Compiled modules and the platform their handlers are registered for. The emulation module runs the
# CUDA kernels' thread bodies on the host (test-only targets named *_cuda_emulation).
_MODULES = {"_rubiks_shift_cpu": "cpu", "_rubiks_shift_cuda": "CUDA",
            "_rubiks_shift_cuda_emulation": "cpu"}


KERNELS_DIR = "RUBIKS_JAX_KERNELS_DIR"


def kernels_dir() -> str | None:
    """The directory named by RUBIKS_JAX_KERNELS_DIR, or None (the package's own modules)."""
    directory = os.environ.get(KERNELS_DIR, "").strip()
    return os.path.abspath(directory) if directory else None


def _load_from(directory: str, module: str) -> types.ModuleType:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(directory, module + suffix)
        if os.path.isfile(path):
            name = f"rubiks_jax.{module}"
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            lib = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(lib)
            sys.modules[name] = lib  # later imports of rubiks_jax.<module> get this one
            return lib
    raise ImportError(f"no {module}{{{','.join(importlib.machinery.EXTENSION_SUFFIXES)}}} in "
                      f"{KERNELS_DIR}={directory}")


def kernel_module(module: str) -> types.ModuleType:
    """The compiled module `module` (e.g. "_rubiks_shift_cpu"): from RUBIKS_JAX_KERNELS_DIR when
    set, else rubiks_jax.<module>. Raises ImportError when it is not built."""
    directory = kernels_dir()
    if directory is None:
        return importlib.import_module(f"rubiks_jax.{module}")
    return _load_from(directory, module)


@functools.cache
def _registered_modules() -> tuple[str, ...]:
    found = []
    for module, platform in _MODULES.items():
        try:
            lib = kernel_module(module)
        except ImportError:
            continue
        targets = dict(lib.registrations())
        if hasattr(lib, "bench_registrations"):  # the CPU module's benchmark instruments
            targets.update(lib.bench_registrations())
        for name, capsule in targets.items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)
        found.append(module)
    return tuple(found)


def available() -> bool:
    """True when the compiled CPU kernels are importable (and registered)."""
    return "_rubiks_shift_cpu" in _registered_modules()


def cuda_built() -> bool:
    """True when the CUDA kernels were compiled into this installation."""
    return "_rubiks_shift_cuda" in _registered_modules()


def cuda_emulation_built() -> bool:
    """True when the host emulation of the CUDA kernels (a test facility) is importable."""
    return "_rubiks_shift_cuda_emulation" in _registered_modules()


# The CPU kernels' vector levels, in order (the C++ SimdIsa): each runs where the CPU has it.
CPU_SIMD_LEVELS = ("scalar", "avx2", "avx512")


def cpu_simd_isas() -> tuple[str, ...]:
    """The vector instruction sets the CPU kernels can use on this CPU, best first: ("avx512",
    "avx2") with AVX-512 F/BW/VL/DQ, ("avx2",) with AVX2, FMA and F16C only, () otherwise or where
    the kernels are not built. The vectorised kernels cover the forward, input and shift gradients
    at w stride 1; the scalar kernels run elsewhere."""
    if not available():
        return ()
    best = int(kernel_module("_rubiks_shift_cpu").simd_best())
    return tuple(reversed(CPU_SIMD_LEVELS[1:best + 1]))


def cpu_simd_supported() -> bool:
    """True when the CPU kernels have a vectorised path (AVX2 or AVX-512) on this CPU."""
    return bool(cpu_simd_isas())


def _cpu_module() -> types.ModuleType:
    """The CPU kernels' module, for the switches below; a clear error where it is not built."""
    if not available():
        raise ValueError("the compiled CPU kernels are not installed")
    return kernel_module("_rubiks_shift_cpu")


def cpu_simd_isa() -> str:
    """The vector instruction set the CPU kernels use now: "avx512", "avx2" or "scalar"."""
    return CPU_SIMD_LEVELS[int(_cpu_module().simd_level())]


def set_cpu_simd(isa: bool | str) -> str:
    """Caps the CPU kernels' vector instruction set: True (the best this CPU has; the default
    unless the environment sets RUBIKS_JAX_CPU_SIMD=0 or =avx2), False or "scalar" (the scalar
    kernels), "avx2" (AVX2 even on an AVX-512 CPU) or "avx512". Takes effect for every later call,
    compiled or not. Returns the one used now (see cpu_simd_isa). For A/B measurements and for
    testing every path on one machine."""
    if isinstance(isa, bool):
        cap = len(CPU_SIMD_LEVELS) - 1 if isa else 0
    elif isa in CPU_SIMD_LEVELS:
        cap = CPU_SIMD_LEVELS.index(isa)
    else:
        raise ValueError(f"set_cpu_simd: isa must be True, False or one of {CPU_SIMD_LEVELS}, "
                         f"got {isa!r}")
    return CPU_SIMD_LEVELS[int(_cpu_module().set_simd(cap))]


def set_cpu_channels_last(on: bool) -> None:
    """Lets the vectorised forward and input gradient run their channels-last kernel where every
    vector's channels (16 or 8 lanes) reach at most two source columns, rows and frames per corner
    (on=True, the default), or always the transposing kernel. Both give the same bits; for A/B
    measurements and for testing both kernels on one machine."""
    _cpu_module().set_channels_last(bool(on))


def set_cpu_stream_min_bytes(nbytes: int) -> int:
    """The vectorised forward and input gradient write outputs of at least `nbytes` bytes with
    streaming stores and smaller ones with plain stores (default 4 MiB: a small output stays in the
    cache for its reader); the values are the same either way. Returns the previous threshold."""
    return int(_cpu_module().set_stream_min_bytes(int(nbytes)))


def cpu_channels_last_calls() -> int:
    """How many forward and input-gradient calls ran the channels-last kernel in this process
    (tests read it to know which kernel a case reached)."""
    return int(_cpu_module().channels_last_calls())


STREAM_NEGATE = "rubiks_jax_stream_negate"


def stream_negate(x: jnp.ndarray, streaming: bool = True) -> jnp.ndarray:
    """-x written to a new buffer (a flip of the sign bit; one read of x, one write), on the host:
    the op benchmark's memory floor, not part of the op. `streaming`: non-temporal stores (as the
    kernels write their outputs) or plain ones. x: any shape, float16/bfloat16/float32/float64."""
    if not available():
        raise RuntimeError("stream_negate needs the compiled CPU kernels (_rubiks_shift_cpu)")
    return jax.ffi.ffi_call(STREAM_NEGATE, jax.ShapeDtypeStruct(x.shape, x.dtype))(
        x, streaming=bool(streaming))


def _attrs(geo: Geometry) -> dict[str, np.int64]:
    st, sh, sw = geo.stride
    pt, ph, pw = geo.padding
    return dict(stride_t=np.int64(st), stride_h=np.int64(sh), stride_w=np.int64(sw),
                pad_t=np.int64(pt), pad_h=np.int64(ph), pad_w=np.int64(pw))


def reduction_chunks(n: int, geo: Geometry) -> int:
    points = n * int(np.prod(geo.out_size))
    return max(1, min(points // POINTS_PER_CHUNK, MAX_REDUCTION_CHUNKS))


def _result(like: jnp.ndarray, shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
    """A result of the call: under shard_map varying over the manual axes `like` varies over (an
    FFI call's results are otherwise typed as replicated), on `like`'s mesh."""
    aval = jax.typeof(like)
    manual = getattr(aval, "manual_axis_type", None)
    if manual is None or not manual.varying:
        return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=manual,
                                sharding=jax.sharding.NamedSharding(aval.sharding.mesh,
                                                                    jax.sharding.PartitionSpec()))


def _interpolate(target: str, src: jnp.ndarray, shift: jnp.ndarray, geo: Geometry,
                 quantize: bool) -> jnp.ndarray:
    """Forward (x -> y) or input gradient (dy -> dx): one kernel call."""
    n, c = src.shape[0], src.shape[-1]
    size = geo.out_size if target == FORWARD else geo.in_size
    out = _result(src, (n, *size, c), src.dtype)
    if src.size == 0 or out.size == 0:
        return jnp.zeros(out.shape, out.dtype)
    return jax.ffi.ffi_call(target, out)(src, shift, quantize=quantize, **_attrs(geo))


def forward(x: jnp.ndarray, shift: jnp.ndarray, geo: Geometry, quantize: bool) -> jnp.ndarray:
    return _interpolate(FORWARD, x, shift, geo, quantize)


def grad_input(dy: jnp.ndarray, shift: jnp.ndarray, geo: Geometry, quantize: bool) -> jnp.ndarray:
    return _interpolate(GRAD_INPUT, dy, shift, geo, quantize)


def grad_shift(x: jnp.ndarray, dy: jnp.ndarray, shift: jnp.ndarray, geo: Geometry) -> jnp.ndarray:
    """The shift gradient, (C, 3) float32: one kernel call (a deterministic chunked reduction)."""
    n, c = x.shape[0], x.shape[-1]
    if x.size == 0 or dy.size == 0:
        return jnp.zeros((c, 3), jnp.float32)
    dshift, _ = jax.ffi.ffi_call(
        GRAD_SHIFT,
        (_result(x, (c, 3), jnp.float32),
         _result(x, (reduction_chunks(n, geo), c, 3), jnp.float32)),
    )(x, dy, shift, **_attrs(geo))
    return dshift
