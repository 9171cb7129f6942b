"""Orbax checkpoints in WORKDIR/checkpoints: async saves, the latest N and the best M by validation
top-1 kept (a latest checkpoint is never deleted), resume from the latest.

Orbax tracks the best itself: every evaluated checkpoint is saved with its metrics, which Orbax
writes next to it (only because `best_fn` is set) and reads back when a manager opens the
directory, so the ranking survives restarts.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "top1"


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
                                           enable_async_checkpointing=not read_only,
                                           create=not read_only)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_step: int,
         metrics: dict[str, float] | None = None) -> None:
    """Saves (asynchronously) the host-local, unreplicated `state`, where the data stream is and,
    for an evaluated checkpoint, its metrics (with BEST_METRIC)."""
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave({"data_step": int(data_step)})),
              metrics=metrics)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, int]:
    """(state, data_step) of checkpoint `step`, with `abstract_state`'s structure and shapes (None:
    the saved tree as it is)."""
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out["state"], int(out["meta"]["data_step"])


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
