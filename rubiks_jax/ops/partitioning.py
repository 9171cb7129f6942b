"""The op's three calls (forward, input gradient, shift gradient) under `vmap` and on many devices.

Each call of impl "ffi" or "xla" is wrapped twice, outermost first:

- `custom_vmap`: a mapped axis is folded into the batch N when the shift is shared, and into the
  channels C when each mapped element has its own shift, so a vmapped call is still one call (one
  kernel launch), and the partitioning below, which has no batching rule of its own, never sees
  a batch tracer.
- `custom_partitioning`: under `jit` with shardings each device runs the call on its own block of
  x (or dy). The op mixes values only along T, H and W, and only within one channel, so:
    * N sharded: each device runs its shard; the output keeps x's sharding; the shift gradient is
      the sum of the shards' partial (C, 3) gradients (one all-reduce over N's mesh axes).
    * C sharded: `shift` is cut along C alike (it is small; a replicated one is only sliced), and
      nothing is communicated, forward or backward.
    * T, H or W sharded: a shift reaches across the shard edges, so those axes are gathered
      (all-gather of the sharded axis only; N and C stay sharded) and the output is replicated
      along them; one RuntimeWarning says which array and axes. Shard N or C instead.
    * An axis whose length its mesh axes do not divide is gathered the same way (with the warning):
      the kernels must not see XLA's padding of an uneven shard.
  Shardy (jax's default) reads `sharding_rule`; GSPMD reads `infer_sharding_from_operands`.

One device, `pmap` and `shard_map` run the call as it is. Under shard_map with jax's varying-axes
typing (check_vma, the default), x and a replicated shift are first made varying alike
(vary_alike), so dL/dshift comes back summed over the devices, as for jax's own ops.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import custom_batching
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from rubiks_jax.ops.geometry import Geometry

# (src, shift, geo, quantize) -> (N, T', H', W', C): an impl's forward or grad_input.
Interpolation = Callable[[jax.Array, jax.Array, Geometry, bool], jax.Array]
# (x, dy, shift, geo) -> (C, 3) float32: an impl's grad_shift.
ShiftGradient = Callable[[jax.Array, jax.Array, jax.Array, Geometry], jax.Array]

_AXES = "NTHWC"
# Shardy factors: x's and y's T, H, W are distinct factors (their lengths differ under stride and
# padding, and a shard of one is not the shard of the other), so Shardy never ties them together.
_SRC, _DST = "n t h w c", "n to ho wo c"


# ------------------------------------------------------------------------------------------------
# vmap: fold a mapped axis into N (shared shift) or into C (one shift per mapped element).
# ------------------------------------------------------------------------------------------------
def _broadcast(v: jax.Array, batched: bool, size: int) -> jax.Array:
    return v if batched else jnp.broadcast_to(v, (size,) + v.shape)


def _merge_into_batch(v: jax.Array) -> jax.Array:  # (V, N, ...) -> (V*N, ...)
    return v.reshape((-1,) + v.shape[2:])


def _split_batch(v: jax.Array, size: int) -> jax.Array:  # (V*N, ...) -> (V, N, ...)
    return v.reshape((size, -1) + v.shape[1:])


def _merge_into_channels(v: jax.Array) -> jax.Array:  # (V, N, T, H, W, C) -> (N, T, H, W, V*C)
    v = jnp.moveaxis(v, 0, -2)
    return v.reshape(v.shape[:-2] + (-1,))


def _split_channels(v: jax.Array, size: int) -> jax.Array:  # (N, T, H, W, V*C) -> (V, N, ...)
    v = v.reshape(v.shape[:-1] + (size, -1))
    return jnp.moveaxis(v, -2, 0)


# ------------------------------------------------------------------------------------------------
# Shardings: keep N and C, gather T, H, W.
# ------------------------------------------------------------------------------------------------
def _mesh_axes(entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _spec(sharding, shape: tuple[int, ...]) -> tuple:
    """The PartitionSpec of a rank-5 array's sharding, one entry per axis (None: replicated)."""
    if not isinstance(sharding, NamedSharding):
        # A sharding without a mesh (GSPMDSharding) can only be honoured replicated.
        return (None,) * len(shape)
    spec = tuple(sharding.spec)
    return spec + (None,) * (len(shape) - len(spec))


def _kept(mesh, name: str, shape: tuple[int, ...], sharding) -> tuple:
    """`sharding`'s spec with T, H and W (and any axis its mesh axes do not divide) replicated;
    warns once per distinct gather."""
    spec = _spec(sharding, shape)
    kept, gathered = list(spec), []
    for i, entry in enumerate(spec):
        axes = _mesh_axes(entry)
        if not axes:
            continue
        split = math.prod(mesh.shape[a] for a in axes)
        if i in (1, 2, 3) or shape[i] % split:
            kept[i] = None
            why = "" if i in (1, 2, 3) else f", whose length {shape[i]} they do not divide"
            gathered.append(f"{_AXES[i]} over mesh axes {axes}{why}")
    if gathered:
        _warn_gathered(name, tuple(shape), "; ".join(gathered))
    return tuple(kept)


@functools.cache  # once per distinct message, also where the warnings filter says "always"
def _warn_gathered(name: str, shape: tuple[int, ...], what: str) -> None:
    warnings.warn(f"rubiks_shift: {name} of shape {shape} is sharded along {what}; the op gathers "
                  f"that (all-gather of those axes only, N and C stay sharded) and its result is "
                  f"replicated along them. Shard the batch N or the channels C to avoid it.",
                  RuntimeWarning, stacklevel=2)


def _out_spec(kept: tuple) -> PartitionSpec:  # (N, T', H', W', C): N and C as kept
    return PartitionSpec(kept[0], None, None, None, kept[4])


def _shift_spec(kept: tuple) -> PartitionSpec:  # (C, 3)
    return PartitionSpec(kept[4], None)


def _first_sharded(mesh, names: tuple[str, ...], shapes) -> tuple:
    """The kept spec of the first operand that is sharded at all (x before dy), else replicated."""
    for name, shape in zip(names, shapes):
        spec = _spec(shape.sharding, shape.shape)
        if any(e is not None for e in spec):
            return _kept(mesh, name, shape.shape, shape.sharding)
    return (None,) * 5


# ------------------------------------------------------------------------------------------------
# shard_map: the values already are per-device blocks.
# ------------------------------------------------------------------------------------------------
def varying(v: jax.Array) -> frozenset[str]:
    """The manual mesh axes v varies over (empty outside shard_map)."""
    manual = getattr(jax.typeof(v), "manual_axis_type", None)
    return manual.varying if manual is not None else frozenset()


def vary_alike(x: jax.Array, shift: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Under `shard_map`, x and shift made varying over the same manual mesh axes.

    A shift replicated across the devices that hold different blocks of x (the usual case: one
    parameter, a batch split over devices) is cast to varying first, as jax's own ops do
    implicitly. The cast's transpose then sums the per-device shift gradients, so dL/dshift comes
    back replicated, and the custom_vjp's gradients match its inputs' types."""
    vary_x, vary_s = varying(x), varying(shift)
    if vary_x - vary_s:
        shift = jax.lax.pcast(shift, tuple(sorted(vary_x - vary_s)), to="varying")
    if vary_s - vary_x:
        x = jax.lax.pcast(x, tuple(sorted(vary_s - vary_x)), to="varying")
    return x, shift


# ------------------------------------------------------------------------------------------------
# The wrapped calls.
# ------------------------------------------------------------------------------------------------
@functools.cache
def _interpolation(fn: Interpolation, geo: Geometry, quantize: bool, adjoint: bool):
    """fn (an impl's forward, or with adjoint=True its grad_input) as a partitioned, batchable
    function of (src, shift)."""
    name = "dy" if adjoint else "x"

    @custom_partitioning
    def partitioned(src, shift):
        return fn(src, shift, geo, quantize)

    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        kept = _kept(mesh, name, arg_shapes[0].shape, arg_shapes[0].sharding)
        src = NamedSharding(mesh, PartitionSpec(*kept))
        return (mesh, lambda s, d: fn(s, d, geo, quantize), NamedSharding(mesh, _out_spec(kept)),
                (src, NamedSharding(mesh, _shift_spec(kept))))

    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        kept = _kept(mesh, name, arg_shapes[0].shape, arg_shapes[0].sharding)
        return NamedSharding(mesh, _out_spec(kept))

    src_rule, dst_rule = (_DST, _SRC) if adjoint else (_SRC, _DST)
    partitioned.def_partition(partition, infer_sharding_from_operands=infer,
                              sharding_rule=f"{src_rule}, c k -> {dst_rule}")

    @custom_batching.custom_vmap
    def call(src, shift):
        # Inside shard_map (values varying over manual axes) each device already holds its block.
        return (fn(src, shift, geo, quantize) if varying(src) else partitioned(src, shift))

    @call.def_vmap
    def rule(axis_size, in_batched, src, shift):
        src_b, shift_b = in_batched
        if not shift_b:
            return _split_batch(call(_merge_into_batch(src), shift), axis_size), True
        src = _merge_into_channels(_broadcast(src, src_b, axis_size))
        out = call(src, shift.reshape(-1, 3))
        return _split_channels(out, axis_size), True

    return call


@functools.cache
def _shift_gradient(fn: ShiftGradient, geo: Geometry):
    """fn (an impl's grad_shift) as a partitioned, batchable function of (x, dy, shift)."""

    @custom_partitioning
    def partitioned(x, dy, shift):
        return fn(x, dy, shift, geo)

    def partition(mesh, arg_shapes, result_shape):
        del result_shape
        kept = _first_sharded(mesh, ("x", "dy"), arg_shapes[:2])
        batch_axes = _mesh_axes(kept[0])

        def local(x, dy, shift):
            partial = fn(x, dy, shift, geo)
            # Each batch shard holds its own samples' share of the sum over N.
            return jax.lax.psum(partial, batch_axes) if batch_axes else partial

        x_sharding = NamedSharding(mesh, PartitionSpec(kept[0], None, None, None, kept[4]))
        dy_sharding = NamedSharding(mesh, _out_spec(kept))
        shift_sharding = NamedSharding(mesh, _shift_spec(kept))
        return mesh, local, shift_sharding, (x_sharding, dy_sharding, shift_sharding)

    def infer(mesh, arg_shapes, result_shape):
        del result_shape
        return NamedSharding(mesh, _shift_spec(_first_sharded(mesh, ("x", "dy"), arg_shapes[:2])))

    partitioned.def_partition(partition, infer_sharding_from_operands=infer,
                              sharding_rule=f"{_SRC}, {_DST}, c k -> c k")

    @custom_batching.custom_vmap
    def call(x, dy, shift):
        return fn(x, dy, shift, geo) if varying(x) else partitioned(x, dy, shift)

    @call.def_vmap
    def rule(axis_size, in_batched, x, dy, shift):
        # Each mapped element has its own shift gradient, so the mapped axis always goes to C.
        x_b, dy_b, shift_b = in_batched
        x = _merge_into_channels(_broadcast(x, x_b, axis_size))
        dy = _merge_into_channels(_broadcast(dy, dy_b, axis_size))
        shift = _broadcast(shift, shift_b, axis_size).reshape(-1, 3)
        return call(x, dy, shift).reshape(axis_size, -1, 3), True

    return call


def forward(fn: Interpolation, x: jax.Array, shift: jax.Array, geo: Geometry,
            quantize: bool) -> jax.Array:
    """fn(x, shift, geo, quantize), partitioned and batchable. x: (N, T, H, W, C)."""
    return _interpolation(fn, geo, quantize, False)(x, shift)


def grad_input(fn: Interpolation, dy: jax.Array, shift: jax.Array, geo: Geometry,
               quantize: bool) -> jax.Array:
    """fn(dy, shift, geo, quantize), partitioned and batchable. dy: (N, To, Ho, Wo, C)."""
    return _interpolation(fn, geo, quantize, True)(dy, shift)


def grad_shift(fn: ShiftGradient, x: jax.Array, dy: jax.Array, shift: jax.Array,
               geo: Geometry) -> jax.Array:
    """fn(x, dy, shift, geo), partitioned and batchable: (C, 3) float32."""
    return _shift_gradient(fn, geo)(x, dy, shift)
