"""The op under `jit` with shardings, checked on forced host devices by reading the compiled HLO.

Run as a script (test_partitioning.py does, once per device count and partitioner):

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.ops.sharding_checks \
        [--gspmd] IMPL...

It prints one JSON object {check: "ok" | what failed} as its last line. Every check compares the
sharded call with the same call on one device: y and dL/dx bit for bit (each shard runs the same
arithmetic), dL/dshift bit for bit where C alone is sharded and to 2e-6 of its largest entry where
N is (the shards' partial sums are added in another order), and lists the collectives of the
compiled forward and backward. (The one exception: an uneven split, gathered inside a program of its
own, is compared to 1e-6.)
"""

from __future__ import annotations

import json
import re
import sys
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rubiks_jax.ops import partitioning, rubiks_shift

_COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|all-to-all|collective-permute|"
                         r"reduce-scatter)(?:-start)?\(")
GEOMETRIES = {  # name: (dtype, stride, padding, quantize)
    "f32-strided": (jnp.float32, (1, 2, 1), (1, 0, 1), False),
    "bf16-quantized": (jnp.bfloat16, (1, 1, 1), (0, 0, 0), True),
}
CHECKS = ("batch", "channels", "batch-and-channels", "time-gathered", "vmap", "shard_map")


def collectives(fn, *args) -> list[tuple[str, str]]:
    """(kind, result shape) of every collective in the compiled HLO of jit(fn)(*args)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return [(m.group(2), m.group(1)) for m in _COLLECTIVE.finditer(text)]


def _data(lead: tuple[int, ...], dtype, frames: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(lead + (frames, 7, 6, 16)), dtype)
    shift = jnp.asarray(rng.uniform(-2.5, 2.5, (16, 3)), jnp.float32)
    return x, shift


def _calls(impl: str, geometry: str):
    dtype, stride, padding, quantize = GEOMETRIES[geometry]
    kw = dict(stride=stride, padding=padding, quantize=quantize, impl=impl)

    def forward(x, s):
        return rubiks_shift(x, s, **kw)

    def backward(x, s, dy):
        return jax.vjp(forward, x, s)[1](dy)

    return dtype, forward, backward


def _same(name: str, got, want) -> None:
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                  err_msg=name)


def _close_sum(name: str, got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    scale = float(np.max(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale, err_msg=name)


def _expect(kind: str, found: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    # Under the backward the custom_vjp's residuals are x and shift; only the dshift all-reduce
    # may appear. The shape is compared without its layout.
    strip = [(k, re.sub(r"\{[^}]*\}", "", s)) for k, s in found]
    assert strip == expected, f"{kind}: collectives {strip}, expected {expected}"


def check_sharded(impl: str, geometry: str, mesh: Mesh, x_spec: P, shift_spec: P,
                  dshift_reduced: bool, local_channels: int = 16) -> None:
    """x sharded by x_spec (batch and/or channels): the forward compiles to no collective, the
    backward to at most the one (C, 3) all-reduce; results as on one device."""
    dtype, forward, backward = _calls(impl, geometry)
    x, s = _data((8,), dtype)
    y1 = forward(x, s)
    dy = jnp.cos(y1.astype(jnp.float32) * 3.0).astype(dtype)
    dx1, ds1 = backward(x, s, dy)

    xs = jax.device_put(x, NamedSharding(mesh, x_spec))
    ss = jax.device_put(s, NamedSharding(mesh, shift_spec))
    dys = jax.device_put(dy, NamedSharding(mesh, x_spec))
    _expect("forward", collectives(forward, xs, ss), [])
    _expect("backward", collectives(backward, xs, ss, dys),
            [("all-reduce", f"f32[{local_channels},3]")] if dshift_reduced else [])
    y = jax.jit(forward)(xs, ss)
    assert y.sharding.is_equivalent_to(xs.sharding, y.ndim), (y.sharding, xs.sharding)
    _same("y", y, y1)
    dx, ds = jax.jit(backward)(xs, ss, dys)
    assert dx.sharding.is_equivalent_to(xs.sharding, dx.ndim), (dx.sharding, xs.sharding)
    _same("dx", dx, dx1)
    (_close_sum if dshift_reduced else _same)("dshift", ds, ds1)


def check_time_gathered(impl: str, geometry: str, mesh: Mesh) -> None:
    """T sharded: one warning naming x, T and the mesh axis; x gathered along T only (N stays
    sharded); results as on one device."""
    dtype, forward, backward = _calls(impl, geometry)
    axis = mesh.axis_names[0]
    x, s = _data((2,), dtype, frames=mesh.shape[axis])
    y1 = forward(x, s)
    xs = jax.device_put(x, NamedSharding(mesh, P(None, axis)))
    partitioning._warn_gathered.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = collectives(forward, xs, s)
    messages = [str(w.message) for w in caught if "rubiks_shift" in str(w.message)]
    assert len(messages) == 1 and "x of shape" in messages[0] and "along T over mesh axes " \
        f"('{axis}',)" in messages[0], messages
    assert [k for k, _ in found] == ["all-gather"], found
    _same("y", jax.jit(forward)(xs, s), y1)
    # N and T on two mesh axes: the gather is along T only, so each device keeps its N shard.
    if len(mesh.axis_names) == 2:
        n_axis, t_axis = mesh.axis_names
        x, s = _data((mesh.shape[n_axis] * 2,), dtype)
        xs = jax.device_put(x, NamedSharding(mesh, P(n_axis, t_axis)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = collectives(forward, xs, s)
            y = jax.jit(forward)(xs, s)
        per_device = x.shape[0] // mesh.shape[n_axis]
        gathered = [int(re.search(r"\[(\d+),", shape).group(1)) for _, shape in found]
        assert found and all(k == "all-gather" for k, _ in found) and \
            gathered == [per_device] * len(found), found
        _same("y", y, forward(x, s))
    else:
        # N = 6 constrained onto 4 or 8 devices: an uneven split, gathered with the warning.
        x, s = _data((6,), dtype)
        uneven = NamedSharding(mesh, P(axis))
        fn = jax.jit(lambda x, s: forward(jax.lax.with_sharding_constraint(x, uneven), s))
        partitioning._warn_gathered.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = fn(x, s)
        messages = [str(w.message) for w in caught if "rubiks_shift" in str(w.message)]
        assert len(messages) == 1 and "whose length 6 they do not divide" in messages[0], messages
        # The constraint makes another program, which XLA may fuse (so round) differently.
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(forward(x, s), np.float32),
                                   rtol=1e-5, atol=1e-6)


def check_vmap(impl: str, geometry: str, mesh: Mesh) -> None:
    """vmap with the mapped axis sharded, forward and both gradients, no collective at all (each
    mapped element has its own shift gradient): a shared shift (the mapped axis merged into N) and
    one shift per mapped element (merged into C)."""
    dtype, forward, backward = _calls(impl, geometry)
    axis = mesh.axis_names[0]
    size = mesh.shape[axis]
    x, s = _data((size, 2), dtype)
    shifts = jnp.stack([s * (1 + 0.1 * i) for i in range(size)])
    dy = jnp.cos(jax.vmap(forward, (0, None))(x, s).astype(jnp.float32)).astype(dtype)
    xs = jax.device_put(x, NamedSharding(mesh, P(axis)))
    dys = jax.device_put(dy, NamedSharding(mesh, P(axis)))
    shs = jax.device_put(shifts, NamedSharding(mesh, P(axis)))
    for name, fn, args, sharded in (
            ("shared", jax.vmap(backward, (0, None, 0)), (x, s, dy), (xs, s, dys)),
            ("own", jax.vmap(backward), (x, shifts, dy), (xs, shs, dys))):
        _expect(f"vmap {name}", collectives(fn, *sharded), [])
        for got, want in zip(jax.jit(fn)(*sharded), fn(*args)):
            _same(f"vmap {name}", got, want)
    y = jax.jit(jax.vmap(forward, (0, None)))(xs, s)
    assert y.sharding.is_equivalent_to(xs.sharding, y.ndim), (y.sharding, xs.sharding)
    _same("vmap y", y, jax.vmap(forward, (0, None))(x, s))


def check_shard_map(impl: str, geometry: str, mesh: Mesh) -> None:
    """Under shard_map each device calls the op on its block with the replicated shift; the
    gradient of that shift comes back summed over the devices (one all-reduce), as for jax's own
    ops."""
    dtype, forward, backward = _calls(impl, geometry)
    axis = mesh.axis_names[0]
    x, s = _data((8,), dtype)
    dy = jnp.cos(forward(x, s).astype(jnp.float32)).astype(dtype)

    def per_shard(x, s, dy):
        return (forward(x, s),) + backward(x, s, dy)

    fn = jax.shard_map(per_shard, mesh=mesh, in_specs=(P(axis), P(), P(axis)),
                       out_specs=(P(axis), P(axis), P()))
    _expect("shard_map", collectives(fn, x, s, dy), [("all-reduce", "f32[16,3]")])
    y, dx, ds = jax.jit(fn)(x, s, dy)
    dx1, ds1 = backward(x, s, dy)
    _same("y", y, forward(x, s))
    _same("dx", dx, dx1)
    _close_sum("dshift", ds, ds1)


def run(impl: str, check: str) -> None:
    devices = np.array(jax.devices())
    line = Mesh(devices, ("data",))
    grid = Mesh(devices.reshape(-1, 2), ("data", "model"))
    for geometry in GEOMETRIES:
        if check == "batch":
            check_sharded(impl, geometry, line, P("data"), P(), dshift_reduced=True)
        elif check == "channels":
            check_sharded(impl, geometry, line, P(None, None, None, None, "data"), P("data"),
                          dshift_reduced=False)
        elif check == "batch-and-channels":  # the shift arrives replicated and is only sliced
            check_sharded(impl, geometry, grid, P("data", None, None, None, "model"), P(),
                          dshift_reduced=True, local_channels=16 // grid.shape["model"])
        elif check == "time-gathered":
            check_time_gathered(impl, geometry, line)
            check_time_gathered(impl, geometry, grid)
        elif check == "vmap":
            check_vmap(impl, geometry, line)
        elif check == "shard_map":
            check_shard_map(impl, geometry, line)
        else:
            raise ValueError(f"unknown check {check!r}; known: {CHECKS}")


def main(argv: list[str]) -> None:
    if "--gspmd" in argv:
        try:
            jax.config.update("jax_use_shardy_partitioner", False)
        except Exception as e:  # a jax without GSPMD: nothing to check in that mode
            print(json.dumps({"skipped": f"this jax cannot use GSPMD: {e}"}))
            return
    report = {}
    for impl in [a for a in argv if not a.startswith("--")]:
        for check in CHECKS:
            try:
                run(impl, check)
                report[f"{impl}-{check}"] = "ok"
            except Exception:  # reported per check, so one failure does not hide the others
                report[f"{impl}-{check}"] = traceback.format_exc(limit=4)[-3000:]
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
