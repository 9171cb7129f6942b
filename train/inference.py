"""Trained runs at inference: restore a checkpoint, evaluate it with a published protocol, classify
one video. Built from train.construct and train.evaluation (not the training loop); the CLIs
train.evaluate and train.predict wrap these."""

from __future__ import annotations

import json
import os

import flax
import jax
import numpy as np
import tensorflow as tf

from rubiks_jax.data import pipeline, video_io
from train import checkpointing, construct, evaluation, steps


def restore(workdir: str, which: str = "best"
            ) -> tuple[construct.Components, steps.TrainState, int]:
    """(the run's components, the state of checkpoint `which`, its step) of a training workdir;
    `which` is "best", "latest" or a step (checkpointing.find_step)."""
    run = construct.build(construct.load_config(workdir))
    mngr = checkpointing.manager(workdir, read_only=True)
    step = checkpointing.find_step(mngr, which)
    state, _ = checkpointing.restore(mngr, step, run.state)
    return run, state, step


def evaluate_run(workdir: str, views: str, which: str = "best", batch_size: int = 0) -> dict:
    """Top-1 / top-5 of a checkpoint over the run's whole eval split with a view set of
    rubiks_jax.data.sampling.VIEWS; the report is also written to
    WORKDIR/eval_<views>_step<N>.json."""
    run, state, step = restore(workdir, which)
    report = evaluation.evaluate(evaluation.make_eval_fn(run.model, views),
                                 flax.jax_utils.replicate(state), run.builder, run.data,
                                 batch_size or run.config.eval_batch_size, views)
    report.update(step=step, split=run.data.eval_split, data=run.data.name)
    if jax.process_index() == 0:
        path = os.path.join(workdir, f"eval_{views}_step{step}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        report["report"] = path
    return report


def predict(workdir: str, path: str, which: str = "best", top: int = 5) -> list[tuple[str, float]]:
    """The `top` classes (name, softmax score) of one video file or frame folder, 1-clip view."""
    run, state, _ = restore(workdir, which)
    encoded = tf.constant(video_io.encoded_frames(path))
    video = pipeline.eval_views(encoded, run.data, "1clip").numpy()  # (1, T, S, S, 3)
    logits = run.model.apply(jax.device_get(state).variables(), video, train=False)
    scores = np.asarray(jax.nn.softmax(logits, axis=-1))[0]
    order = np.argsort(-scores)[:top]
    return [(run.class_names[i], float(scores[i])) for i in order]
