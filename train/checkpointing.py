"""Orbax checkpoints in WORKDIR/checkpoints: async saves, the latest N and the best M by validation
top-1 kept (a latest checkpoint is never deleted), resume from the latest.

Orbax tracks the best itself: every evaluated checkpoint is saved with its metrics, which Orbax
writes next to it (only because `best_fn` is set) and reads back when a manager opens the
directory, so the ranking survives restarts.

Every checkpoint carries a CRC-32 of each array as saved, checked on restore: Orbax's files have no
checksum of their own, and bytes changed on disk (a bad sector, a partial copy) can decode as
finite values that training would carry on from.
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections import Counter
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "top1"
# Two warnings Orbax's CheckpointManager logs for how this module uses it, not for a fault; every
# other Orbax warning still shows:
# - at every save without metrics once `best_fn` is set: the checkpoints between evaluations have
#   none by design (LatestN keeps them, BestN ignores them);
# - whenever a read-only manager opens a directory (inference, evaluation, figures).
_UNTRACKED_SAVE = "Requested `tracked_metric`; did not provide metrics."
_READ_ONLY = "Given directory is read only="


def _drop_expected_warnings(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return message != _UNTRACKED_SAVE and not message.startswith(_READ_ONLY)


absl_logging.get_absl_logger().addFilter(_drop_expected_warnings)
QUARANTINE = "corrupt_checkpoints"  # WORKDIR/<this>/<step>: checkpoints that failed to restore


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or could not be read back intact."""


class LayoutMismatch(CheckpointError):
    """A checkpoint holds arrays of other shapes than the state it is restored into: another model
    or optimizer, not corruption."""


def _best_metric(metrics: dict[str, float]) -> float:
    return metrics[BEST_METRIC]


def manager(workdir: str, keep_latest: int = 2, keep_best: int = 3,
            read_only: bool = False) -> ocp.CheckpointManager:
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(keep_latest),
        # Checkpoints saved between evaluations carry no metric: only LatestN keeps them.
        pp.BestN(get_metric_fn=_best_metric, n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    # best_fn also makes Orbax write the metrics passed to `save` (and best_step() rank them).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_best_metric,
                                           best_mode="max", read_only=read_only,
                                           save_interval_steps=0 if read_only else 1,
                                           enable_async_checkpointing=not read_only,
                                           create=not read_only)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_step: int,
         metrics: dict[str, float] | None = None) -> None:
    """Saves (asynchronously) `state` (host arrays, or global jax Arrays as they are), where the
    data stream is and,
    for an evaluated checkpoint, its metrics (with BEST_METRIC)."""
    try:  # orbax first waits for the save before this one: its failure surfaces here
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({"data_step": int(data_step), "crc32": checksums(state)})),
            metrics=metrics)
    except Exception as err:
        raise _save_error(mngr, err) from err


def check_free_space(workdir: str, state: Any, copies: int = 2) -> None:
    """CheckpointError unless WORKDIR's file system has room for `copies` checkpoints of `state`
    (Orbax writes a new checkpoint beside the kept ones before it deletes any)."""
    size = sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
               for x in jax.tree_util.tree_leaves(state))
    free = shutil.disk_usage(workdir).free
    if free < copies * size:
        raise CheckpointError(f"{workdir}: {free / 2**20:.1f} MiB free, but {copies} checkpoints "
                              f"of this run need {copies * size / 2**20:.1f} MiB")


def check_saves(mngr: ocp.CheckpointManager) -> None:
    """Raises CheckpointError (one line: the directory and the cause) if an asynchronous save has
    failed; cheap enough to call after every training step."""
    try:
        mngr.check_for_errors()
    except Exception as err:  # orbax re-raises the writer thread's error
        raise _save_error(mngr, err) from err


def wait(mngr: ocp.CheckpointManager) -> None:
    """Waits for the saves in flight; a failed one raises CheckpointError."""
    try:
        mngr.wait_until_finished()
        mngr.check_for_errors()
    except Exception as err:
        raise _save_error(mngr, err) from err


def _save_error(mngr: ocp.CheckpointManager, err: BaseException) -> CheckpointError:
    text = str(err).strip()
    cause = text.splitlines()[0] if text else repr(err)
    return CheckpointError(f"saving a checkpoint in {mngr.directory} failed: "
                           f"{type(err).__name__}: {cause}")


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, int]:
    """(state, data_step) of checkpoint `step`, with `abstract_state`'s structure, shapes and
    placement (None: the saved tree as host arrays). Raises CheckpointError naming the checkpoint and the first offending
    array when an array differs from what was saved (its checksum) or a floating-point value is
    not finite; LayoutMismatch when its arrays' shapes and dtypes are not `abstract_state`'s."""
    if abstract_state is not None:
        _check_layout(mngr, step, abstract_state)
    else:  # host arrays: a checkpoint of global arrays (jit mode) keeps its saving devices' layout
        abstract_state = jax.tree_util.tree_map(lambda m: np.empty(m.shape, m.dtype),
                                                _saved_metadata(mngr, step))
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    where = os.path.join(mngr.directory, str(step))
    saved = out["meta"].get("crc32")  # absent in checkpoints written before checksums
    if saved is not None:
        changed = _changed(out["state"], saved)
        if changed is not None:
            raise CheckpointError(f"checkpoint {where}: {changed} differs from what was saved "
                                  "(checksum mismatch: the files changed on disk)")
    bad = first_non_finite(out["state"])
    if bad is not None:
        raise CheckpointError(f"checkpoint {where}: {bad} has values that are not finite")
    return out["state"], int(out["meta"]["data_step"])


def _layout(tree: Any) -> Counter:
    """The (shape, dtype) of every leaf, as a multiset (Orbax's metadata names the leaves its own
    way, so names are not compared)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return Counter((tuple(x.shape), np.dtype(x.dtype).name) for x in leaves)


def _saved_metadata(mngr: ocp.CheckpointManager, step: int) -> Any:
    """The saved state's tree of array metadata (shape, dtype), no array read. (The manager's
    item_metadata knows an item only after it saved or restored one: in a resumed run it answers
    None.)"""
    return ocp.StandardCheckpointHandler().metadata(mngr.directory / str(step) / "state")


def _check_layout(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> None:
    saved = _layout(_saved_metadata(mngr, step))
    wanted = _layout(abstract_state)
    if saved == wanted:
        return

    def show(extra: Counter) -> str:
        xs = sorted(extra.elements())
        return ", ".join(f"{d}{list(s)}" for s, d in xs[:4]) + (" ..." if len(xs) > 4 else "")

    raise LayoutMismatch(
        f"checkpoint {os.path.join(mngr.directory, str(step))} holds another model or optimizer "
        f"state than this config builds ({sum(saved.values())} arrays saved, "
        f"{sum(wanted.values())} expected; saved only: {show(saved - wanted) or '-'}; "
        f"expected only: {show(wanted - saved) or '-'}): check the config against the workdir's "
        "config.json")


def _host(leaf: Any) -> np.ndarray:
    """A leaf's values on this host. A global array that spans processes (the jit trainer's
    replicated state) is read from one of this process's devices: every device holds it whole."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(leaf)


def _crc(leaf: Any) -> int:
    x = np.ascontiguousarray(_host(leaf))
    return zlib.crc32(x.reshape(-1).view(np.uint8))


def checksums(tree: Any) -> list[int]:
    """The CRC-32s of the leaves' bytes, sorted: restoring without a target gives the tree back as
    nested dicts in another leaf order, so the leaves are compared as a multiset."""
    return sorted(_crc(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _changed(tree: Any, saved: list[int]) -> str | None:
    """The path of a leaf whose checksum is not among `saved` (or a count when leaves are missing);
    None when the multisets agree."""
    if checksums(tree) == sorted(saved):
        return None
    known = set(saved)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _crc(leaf) not in known:
            return _path(path)
    return f"the state ({len(saved)} arrays saved, {len(jax.tree_util.tree_leaves(tree))} read)"


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def first_non_finite(tree: Any) -> str | None:
    """The path ("params/stage1/...") of the first floating-point leaf with a NaN or Inf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = _host(leaf)
        if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
            return _path(path)
    return None


def restore_latest_intact(mngr: ocp.CheckpointManager, abstract_state: Any, workdir: str,
                          log=print) -> tuple[Any, int, int] | None:
    """(state, data_step, step) of the newest checkpoint that restores intact, or None when there
    are no checkpoints. A checkpoint that fails (unreadable, changed on disk, or not finite) is
    moved to WORKDIR/corrupt_checkpoints/<step> (kept for inspection, never deleted) and the next
    older one is tried; CheckpointError when none is intact. LayoutMismatch (another model) is
    raised as it is: nothing is moved."""
    tried = []
    while mngr.latest_step() is not None:
        step = mngr.latest_step()
        try:
            state, data_step = restore(mngr, step, abstract_state)
            return state, data_step, step
        except LayoutMismatch:
            raise  # a different model: not corruption (the config check names the keys)
        except Exception as err:  # orbax/tensorstore read errors, CheckpointError
            cause = err
        tried.append(step)
        if jax.process_index() == 0:
            dest = os.path.join(workdir, QUARANTINE, str(step))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(os.path.join(mngr.directory, str(step)), dest)
            text = str(cause).strip().splitlines() or [repr(cause)]
            log(f"checkpoint {step} cannot be restored ({type(cause).__name__}: {text[0]}); "
                f"moved to {dest}, trying the one before")
        _sync(f"quarantine_{step}")
        mngr.reload()
    if tried:
        raise CheckpointError(f"no intact checkpoint in {mngr.directory}: {tried} failed to "
                              f"restore (moved to {os.path.join(workdir, QUARANTINE)})")
    return None


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def find_step(mngr: ocp.CheckpointManager, which: str) -> int:
    """The checkpoint `which` names: "latest", "best" (highest validation top-1; the latest when
    none was evaluated) or a step number."""
    if which == "latest":
        step = mngr.latest_step()
    elif which == "best":
        step = mngr.best_step() or mngr.latest_step()
    else:
        step = int(which)
        if step not in mngr.all_steps():
            raise ValueError(f"--step {step}: no such checkpoint (have {sorted(mngr.all_steps())})")
    if step is None:
        raise FileNotFoundError(f"no checkpoints in {mngr.directory}")
    return step
