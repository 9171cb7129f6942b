"""Trained runs at inference: restore a checkpoint, evaluate it with a published protocol, classify
videos. A workdir stands alone: its config.json and classes.json rebuild the model, so only
evaluation reads a data set (its eval split). Built from train.construct and train.evaluation (not
the training loop); the CLIs train.evaluate and train.predict wrap these."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from rubiks_jax.data import pipeline, video_io
from train import checkpointing, construct, evaluation, parallel, steps


def restore(workdir: str, which: str = "best", config: ml_collections.ConfigDict | None = None
            ) -> tuple[construct.Components, steps.TrainState, int]:
    """(the run's components, the state of checkpoint `which`, its step) of a training workdir;
    `which` is "best", "latest" or a step (checkpointing.find_step). Built from WORKDIR/config.json
    (or `config`: it with overrides, construct.apply_overrides) and the run's class names, without
    reading the data set (components.builder is None). components.state is abstract (shapes)."""
    config = construct.load_config(workdir) if config is None else config
    names = construct.load_class_names(workdir, config)
    # The checkpoint is restored into the state's structure, which the schedules (the only use of
    # steps_per_epoch) do not shape.
    run = construct.assemble(config, names, steps_per_epoch=1, abstract=True)
    mngr = checkpointing.manager(workdir, read_only=True)
    step = checkpointing.find_step(mngr, which)
    state, _ = checkpointing.restore(mngr, step, run.state)
    return run, state, step


def evaluate_run(workdir: str, views: str, which: str = "best", batch_size: int = 0,
                 config: ml_collections.ConfigDict | None = None) -> dict:
    """Top-1 / top-5 of a checkpoint over the run's whole eval split with a view set of
    rubiks_jax.data.sampling.VIEWS (the data set of `config`, default WORKDIR/config.json; its
    classes must be the run's); the report is also written to WORKDIR/eval_<views>_step<N>.json."""
    config = construct.load_config(workdir) if config is None else config
    builder, data, names = construct.load_data(config)  # first: a missing data set fails fast
    run, state, step = restore(workdir, which, config)
    construct.check_class_names(run.class_names, names, f"{data.name} in {builder.data_dir}")
    report = evaluation.evaluate(evaluation.make_eval_fn(run.model, views),
                                 parallel.get("pmap").place(state), builder, data,
                                 batch_size or config.eval_batch_size, views)
    report.update(step=step, split=data.eval_split, data=data.name)
    if jax.process_index() == 0:
        path = os.path.join(workdir, f"eval_{views}_step{step}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        report["report"] = path
    return report


def predict(workdir: str, paths: list[str], which: str = "best", top: int = 5,
            batch_size: int = 8, config: ml_collections.ConfigDict | None = None
            ) -> list[list[tuple[str, float]]]:
    """The `top` classes (name, softmax score) of each video file or frame folder in `paths`, with
    the 1-clip view (the preprocessing of the run's config); videos go through the jitted model
    `batch_size` at a time."""
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths: a list of video files or frame folders")
    run, state, _ = restore(workdir, which, config)
    variables = jax.device_put(state.variables())
    scores_fn = jax.jit(lambda variables, video: jax.nn.softmax(
        run.model.apply(variables, video, train=False), axis=-1))
    size = max(1, min(batch_size, len(paths)))  # every batch padded to this: one compilation
    results = []
    for start in range(0, len(paths), size):
        chunk = paths[start:start + size]
        videos = [pipeline.eval_views(tf.constant(video_io.encoded_frames(p)), run.data,
                                      "1clip").numpy()[0] for p in chunk]  # (T, S, S, 3) each
        batch = np.zeros((size,) + videos[0].shape, np.float32)
        batch[:len(videos)] = videos
        scores = np.asarray(scores_fn(variables, batch))[:len(chunk)]
        for row in scores:
            order = np.argsort(-row)[:top]
            results.append([(run.class_names[i], float(row[i])) for i in order])
    return results


def flags_parser(argv: list[str]) -> list[str]:
    """absl `flags_parser` of the inference CLIs: parses their flags; --config.KEY=VALUE
    arguments (construct.apply_overrides) pass through to `main`'s argv, after the others."""
    from absl import flags

    overrides = [a for a in argv[1:] if a.startswith(construct.OVERRIDE_PREFIX)]
    rest = flags.FLAGS([a for a in argv if not a.startswith(construct.OVERRIDE_PREFIX)])
    return rest + overrides


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(positional arguments, --config overrides) of the argv that `flags_parser` returns."""
    args = argv[1:]
    is_override = lambda a: a.startswith(construct.OVERRIDE_PREFIX)  # noqa: E731
    return [a for a in args if not is_override(a)], [a for a in args if is_override(a)]
