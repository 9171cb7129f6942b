"""Trained runs at inference: restore a checkpoint, evaluate with the published protocol, predict
the classes of one video. The CLIs train.evaluate and train.predict wrap these."""

from __future__ import annotations

import functools
import json
import os

import flax
import jax
import numpy as np

from train import checkpointing, steps, train


def resolve_step(mngr, which: str) -> int:
    if which == "latest":
        step = mngr.latest_step()
    elif which == "best":
        step = checkpointing.best_step(mngr) or mngr.latest_step()
    else:
        step = int(which)
        if step not in mngr.all_steps():
            raise ValueError(f"--step {step}: no such checkpoint (have {sorted(mngr.all_steps())})")
    if step is None:
        raise FileNotFoundError(f"no checkpoints in {mngr.directory}")
    return step


def restore_for_inference(workdir: str, which: str = "best"):
    """(config, model, state, step, builder, DataConfig, class names) of a trained run."""
    config = train.load_config(workdir)
    builder, dcfg, names = train.load_data(config)
    model = train.create_model(config, len(names), steps.AXIS)
    params_shape = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jax.numpy.zeros((1, dcfg.num_frames, dcfg.crop_size,
                                                dcfg.crop_size, 3)), train=False))["params"]
    tx, _ = train.make_optimizer(config, params_shape, steps_per_epoch=1)
    abstract = train.initial_state(model, tx, jax.random.PRNGKey(0),
                                   (1, dcfg.num_frames, dcfg.crop_size, dcfg.crop_size, 3))
    mngr = checkpointing.manager(workdir, read_only=True)
    step = resolve_step(mngr, which)
    state, _ = checkpointing.restore(mngr, step, abstract)
    return config, model, state, step, builder, dcfg, names


def evaluate_run(workdir: str, views: str, which: str = "best", batch_size: int = 0) -> dict:
    config, model, state, step, builder, dcfg, _ = restore_for_inference(workdir, which)
    p_eval = jax.pmap(functools.partial(steps.eval_step, model=model), axis_name=steps.AXIS)
    report = train.evaluate(p_eval, flax.jax_utils.replicate(state), builder, dcfg,
                            batch_size or config.eval_batch_size, views)
    report.update(step=step, split=dcfg.eval_split, data=dcfg.name)
    if jax.process_index() == 0:
        path = os.path.join(workdir, f"eval_{views}_step{step}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        report["report"] = path
    return report


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def encoded_frames(path: str) -> list[bytes]:
    """Encoded frames of a frame folder (image files in name order) or of a video file (ffmpeg)."""
    from rubiks_jax.data.builders.common import read_video

    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        frames = []
        for f in files:
            with open(os.path.join(path, f), "rb") as fh:
                frames.append(fh.read())
        return frames
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    return read_video(path)


def predict(workdir: str, path: str, which: str = "best", top: int = 5) -> list[tuple[str, float]]:
    import tensorflow as tf

    from rubiks_jax.data import pipeline

    config, model, state, _, _, dcfg, names = restore_for_inference(workdir, which)
    video = pipeline.eval_views(tf.constant(encoded_frames(path)), dcfg, "1clip").numpy()
    logits = model.apply(jax.device_get(state).variables(), video, train=False)
    scores = np.asarray(jax.nn.softmax(logits, axis=-1))[0]
    order = np.argsort(-scores)[:top]
    return [(names[i], float(scores[i])) for i in order]
