"""The evaluation loop: top-1 / top-5 over a whole eval split with a published protocol
(docs/DESIGN.md, "Evaluation protocols"), every example counted exactly once on any number of
devices and processes."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import tensorflow_datasets as tfds

from rubiks_jax.data import pipeline
from train import parallel, steps

EvalFn = Callable[[steps.TrainState, dict], dict]


def combine(views: str) -> str:
    """How the views of a view set are averaged: logits for the published code's sets, softmax
    scores for ours."""
    return "logits" if views.startswith("official_") else "softmax"


def make_eval_fn(model: nn.Module, views: str = "1clip",
                 devices: parallel.Parallel | None = None) -> EvalFn:
    """steps.eval_step on the devices for a view set: (state placed by `devices`, default pmap;
    host batch of any size) -> host sums over all devices (parallel.Parallel.eval_step)."""
    devices = devices or parallel.get("pmap")
    return devices.eval_step(functools.partial(steps.eval_step, model=model,
                                               combine=combine(views)))


def evaluate(eval_fn: EvalFn, state_repl: steps.TrainState, builder: tfds.core.DatasetBuilder,
             dcfg: pipeline.DataConfig, batch_size: int, views: str) -> dict:
    """{"top1", "top5", "num_examples", "views"} over dcfg.eval_split; `batch_size` is global."""
    per_process = batch_size // jax.process_count()
    ds = pipeline.eval_dataset(builder, dcfg, per_process, views, jax.process_index(),
                               jax.process_count())
    # Every process runs as many batches as the largest shard needs (padded ones, mask False), so
    # that all stay in step.
    num_batches = pipeline.eval_num_batches(builder, dcfg, per_process, jax.process_count())
    totals = {"top1": 0.0, "top5": 0.0, "count": 0.0}
    for batch in pipeline.padded_batches(ds, per_process, num_batches):
        counts = eval_fn(state_repl, batch)
        for k in totals:
            totals[k] += float(counts[k])
    # The eval step's psum runs over every device of every process: the totals are global already.
    count = int(round(totals["count"]))
    expected = builder.info.splits[dcfg.eval_split].num_examples
    if count != expected:
        raise RuntimeError(f"evaluated {count} examples but {dcfg.eval_split!r} has {expected}")
    return {"top1": totals["top1"] / count, "top5": totals["top5"] / count,
            "num_examples": count, "views": views}
