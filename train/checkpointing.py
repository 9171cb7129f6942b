"""Orbax checkpoints in WORKDIR/checkpoints: async saves, the latest N and the best M by validation
top-1 kept (a latest checkpoint is never deleted), resume from the latest."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


def manager(workdir: str, keep_latest: int = 2, keep_best: int = 3,
            read_only: bool = False) -> ocp.CheckpointManager:
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(keep_latest),
        # Checkpoints saved between evaluations carry no metric: only LatestN keeps them.
        pp.BestN(get_metric_fn=lambda m: m["top1"], n=keep_best,
                 keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy,
                                           enable_async_checkpointing=not read_only,
                                           read_only=read_only, create=not read_only)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_step: int,
         metrics: dict[str, float] | None = None) -> None:
    """Saves (asynchronously) the host-local, unreplicated `state` and where the data stream is."""
    meta = {"data_step": int(data_step), "metrics": metrics}
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)),
              metrics=metrics)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, int]:
    """(state, data_step) of checkpoint `step`, with `abstract_state`'s structure and shapes."""
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out["state"], int(out["meta"]["data_step"])


def best_step(mngr: ocp.CheckpointManager) -> int | None:
    """Step of the kept checkpoint with the highest validation top-1 (None if none has one)."""
    best = None
    for step in mngr.all_steps():
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        top1 = (meta.get("metrics") or {}).get("top1")
        if top1 is not None and (best is None or top1 > best[1]):
            best = (step, top1)
    return None if best is None else best[0]
