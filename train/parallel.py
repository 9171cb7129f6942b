"""How the train and eval steps run on the devices: `pmap` (the default) or `jit` over one Mesh
(config.parallelism).

Both run the same per-device step (train.steps: gradients and metrics averaged over steps.AXIS,
cross-device BatchNorm, dropout keyed by the device's index), so both give the same numbers, and
their checkpoints are the same files:

- "pmap": the state and rng are replicated onto the local devices (a leading device axis), each
  host batch is split over the local devices, and the step is `jax.pmap(step)`.
- "jit": one Mesh over every device of every process, with the axis steps.AXIS; the state and rng
  are global arrays replicated through NamedSharding(mesh, P()), a batch is a global array split
  along its first axis (jax.make_array_from_process_local_data: each process hands in its own
  rows), and the step is `jax.jit(jax.shard_map(step))`. Orbax saves and restores these global
  arrays as they are, with no gather onto one host.
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax
import jax
import numpy as np
from flax.training import common_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from train import steps

MODES = ("pmap", "jit")


class Parallel:
    """The placement of arrays and the compilation of steps for one mode of MODES."""

    def __init__(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"parallelism must be one of {MODES}, got {mode!r}")
        self.mode = mode
        if mode == "jit":
            # Process-major device order: process p's rows of a batch land on its own devices, in
            # the order pmap would use them (so axis_index, and the dropout keys, agree).
            self.mesh = Mesh(np.array(jax.devices()), (steps.AXIS,))
            self.replicated = NamedSharding(self.mesh, P())
            self.split = NamedSharding(self.mesh, P(steps.AXIS))

    def place(self, tree: Any) -> Any:
        """A host tree (state, rng) on every device: replicated per local device (pmap) or as
        global replicated arrays (jit)."""
        if self.mode == "pmap":
            return flax.jax_utils.replicate(tree)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), tree)

    def abstract(self, tree: Any) -> Any:
        """The target a checkpoint is restored into: the host tree itself (pmap, placed after) or
        its shapes with the replicated sharding (jit: Orbax reads straight into global arrays)."""
        if self.mode == "pmap":
            return tree
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.replicated), tree)

    def restored(self, tree: Any) -> Any:
        """A tree restored into `abstract(...)`, placed as `place` would."""
        return self.place(tree) if self.mode == "pmap" else tree

    def to_save(self, placed: Any) -> Any:
        """What Orbax saves of a placed tree: one host copy (pmap) or the global arrays (jit)."""
        if self.mode == "pmap":
            return jax.device_get(flax.jax_utils.unreplicate(placed))
        return placed

    def first(self, tree: Any) -> Any:
        """A step's output that is the same on every device, once, on this process (device 0's
        copy: a global array of many processes cannot be read whole by one)."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return jax.tree_util.tree_map(lambda x: x.addressable_data(0), tree)

    def shard(self, batch: dict) -> dict:
        """This process's host batch (B_local, ...) onto its devices."""
        if self.mode == "pmap":
            return common_utils.shard(batch)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.split, x), batch)

    def batches(self, host_batches: Iterable[dict], depth: int = 2) -> Iterator[dict]:
        """Host batches placed on the devices, `depth` ahead of the step (the transfers overlap
        the steps before)."""
        if self.mode == "pmap":
            return flax.jax_utils.prefetch_to_device(map(common_utils.shard, host_batches), depth)
        return _prefetch(map(self.shard, host_batches), depth)

    def train_step(self, step: Callable) -> Callable:
        """step(state, batch, rng) -> (state, metrics), per device, compiled for this mode; the
        state's buffers are donated."""
        if self.mode == "pmap":
            return jax.pmap(step, axis_name=steps.AXIS, donate_argnums=(0,))
        return jax.jit(self._per_device(step, (P(), P(steps.AXIS), P()), (P(), P())),
                       donate_argnums=(0,))

    def _per_device(self, step: Callable, in_specs, out_specs) -> Callable:
        # check_vma=False: the steps are pmap's, written with explicit collectives (gradients
        # pmean'd). With jax's varying-axes typing, the gradient of a replicated parameter would
        # come back already summed over the devices, and the step's pmean would leave that sum.
        return jax.shard_map(step, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)

    def eval_step(self, step: Callable) -> Callable[[Any, dict], dict]:
        """step(state, batch) -> sums over all devices, per device, as (placed state, host batch
        of any size) -> host sums. The batch is zero-padded to a multiple of the local devices,
        and a padded example has mask False, so it counts nothing."""
        if self.mode == "pmap":
            run = flax.jax_utils.pad_shard_unpad(jax.pmap(step, axis_name=steps.AXIS),
                                                 static_return=True)
            return lambda state, batch: jax.device_get(self.first(run(state, batch)))
        run = jax.jit(self._per_device(step, (P(), P(steps.AXIS)), P()))
        local = jax.local_device_count()

        def call(state, batch):
            n = len(batch["label"])
            pad = -n % local
            if pad:
                batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                         for k, v in batch.items()}
            return jax.device_get(self.first(run(state, self.shard(batch))))

        return call


def _prefetch(items: Iterator, depth: int) -> Iterator:
    queue = collections.deque(itertools.islice(items, depth))
    while queue:
        yield queue.popleft()
        queue.extend(itertools.islice(items, 1))


@functools.cache
def get(mode: str) -> Parallel:
    """The Parallel of `mode` (one Mesh per process)."""
    return Parallel(mode)
