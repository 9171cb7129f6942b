"""train_and_evaluate(config, workdir): data-parallel training with periodic evaluation,
checkpoints and resume (in the style of the Flax ImageNet example)."""

from __future__ import annotations

import functools
import json
import os
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds

from rubiks_jax import optim
from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import RubiksNet
from rubiks_jax.models.tsm import TSMResNet
from train import checkpointing, steps
from train.metrics_log import MetricsLog, Progress


# ------------------------------------------------------------------------------------------------
# Set-up pieces (also used by evaluate.py and predict.py).
# ------------------------------------------------------------------------------------------------
def data_config(config: ml_collections.ConfigDict, label_names=None):
    from rubiks_jax.data import pipeline
    from rubiks_jax.data.features import flip_label_pairs

    d = config.data
    if d.flip_pairs == "auto":
        pairs = flip_label_pairs(label_names or [])
    else:
        try:
            pairs = [tuple(int(v) for v in p.split("-")) for p in d.flip_pairs.split(",") if p]
        except ValueError:
            pairs = [()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"config.data.flip_pairs must be 'auto', '' or like '0-1,6-7', got "
                             f"{d.flip_pairs!r}")
    return pipeline.DataConfig(
        name=d.name, data_dir=d.data_dir or None, manual_dir=d.manual_dir or None,
        train_split=d.train_split, eval_split=d.eval_split, num_frames=d.num_frames,
        resize_short=d.resize_short, crop_size=d.crop_size, flip=d.flip,
        flip_pairs=tuple(tuple(p) for p in pairs), shuffle_buffer=d.shuffle_buffer)


def load_data(config: ml_collections.ConfigDict):
    """(builder, DataConfig, class names) for the configured data set (prepared if it is ours)."""
    from rubiks_jax.data import pipeline

    cfg = data_config(config, label_names=[])  # flip pairs resolved below, once names are known
    builder = pipeline.get_builder(cfg)
    names = builder.info.features["label"].names
    return builder, data_config(config, names), names


def create_model(config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None):
    m = config.model
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[m.dtype]
    if m.arch == "rubiksnet":
        return RubiksNet(m.tier, num_classes, num_frames=config.data.num_frames,
                         variant=m.variant, dropout_rate=m.dropout_rate, bn_axis_name=axis_name,
                         dtype=dtype, shift_init=m.shift_init,
                         learn_temporal_shift=m.learn_temporal_shift, impl=m.impl or None)
    if m.arch == "tsm":
        return TSMResNet(m.depth, num_classes, num_frames=config.data.num_frames,
                         dropout_rate=m.dropout_rate, bn_axis_name=axis_name, dtype=dtype)
    raise ValueError(f"config.model.arch must be 'rubiksnet' or 'tsm', got {m.arch!r}")


def make_optimizer(config: ml_collections.ConfigDict, params, steps_per_epoch: int):
    o = config.optim
    lr = optim.scale_learning_rate(o.base_lr, o.batch_size, o.reference_batch)
    return optim.make_optimizer(
        params=params, base_lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
        steps_per_epoch=steps_per_epoch, warmup_epochs=o.warmup_epochs,
        decay_epochs=tuple(o.decay_epochs), shift_lr_ratio=o.shift_lr_ratio,
        temporal_factor=o.temporal_factor, kind=o.get("kind", "sgd"))


def initial_state(model, tx, rng, input_shape) -> steps.TrainState:
    variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
    params = variables["params"]
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}),
                            shift_state=variables.get(TEMPERATURE_COLLECTION, {}),
                            opt_state=tx.init(params))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def shard(batch: dict, num_devices: int) -> dict:
    """(B, ...) -> (devices, B / devices, ...)."""
    def split(x):
        if x.shape[0] % num_devices:
            raise ValueError(f"batch of {x.shape[0]} does not split over {num_devices} devices")
        return x.reshape((num_devices, -1) + x.shape[1:])
    return jax.tree_util.tree_map(split, batch)


def first_replica(tree):
    """Host copy of device 0's replica of a pmapped tree."""
    return jax.device_get(jax.tree_util.tree_map(lambda x: x[0], tree))


def evaluate(p_eval_step, state_repl, builder, dcfg, batch_size: int, views: str) -> dict:
    """Top-1 / top-5 over the whole eval split, every example counted exactly once."""
    from rubiks_jax.data import pipeline

    n_dev = jax.local_device_count()
    per_process = batch_size // jax.process_count()
    ds = pipeline.eval_dataset(builder, dcfg, per_process, views, jax.process_index(),
                               jax.process_count())
    num_batches = pipeline.eval_num_batches(builder, dcfg, per_process, jax.process_count())
    totals = {"top1": 0.0, "top5": 0.0, "count": 0.0}
    for batch in pipeline.padded_batches(ds, per_process, num_batches):
        counts = jax.device_get(p_eval_step(state_repl, shard(batch, n_dev)))
        for k in totals:
            totals[k] += float(counts[k][0])
    # Each process summed its own devices; add up over processes.
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        summed = multihost_utils.process_allgather(np.array([totals[k] for k in totals]))
        totals = dict(zip(totals, np.sum(summed, axis=0).tolist()))
    count = int(round(totals["count"]))
    expected = builder.info.splits[dcfg.eval_split].num_examples
    if count != expected:
        raise RuntimeError(f"evaluated {count} examples but {dcfg.eval_split!r} has {expected}")
    return {"top1": totals["top1"] / count, "top5": totals["top5"] / count,
            "num_examples": count, "views": views}


# ------------------------------------------------------------------------------------------------
# The main loop.
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config`, evaluating each `eval_every_epochs`; resumes from the latest
    checkpoint in `workdir`. Returns the last evaluation's metrics."""
    from rubiks_jax.data import pipeline

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        save_config(config, workdir)
    builder, dcfg, names = load_data(config)
    o = config.optim
    n_dev, n_proc = jax.local_device_count(), jax.process_count()
    if o.batch_size % (n_dev * n_proc):
        raise ValueError(f"config.optim.batch_size={o.batch_size} must divide evenly over "
                         f"{n_proc} processes x {n_dev} devices")
    per_process = o.batch_size // n_proc
    num_train = builder.info.splits[dcfg.train_split].num_examples
    steps_per_epoch = max(1, num_train // o.batch_size)
    total_steps = steps_per_epoch * o.num_epochs
    if config.max_train_steps > 0:
        total_steps = min(total_steps, config.max_train_steps)
    eval_every = max(1, steps_per_epoch * config.eval_every_epochs)

    model = create_model(config, len(names), steps.AXIS)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng = jax.random.split(rng)
    input_shape = (1, dcfg.num_frames, dcfg.crop_size, dcfg.crop_size, 3)
    params_shape = jax.eval_shape(lambda: model.init(init_rng, jnp.zeros(input_shape),
                                                     train=False))["params"]
    tx, schedules = make_optimizer(config, params_shape, steps_per_epoch)
    state = initial_state(model, tx, init_rng, input_shape)
    # Annealed over the planned run (not max_train_steps), so a shortened run anneals the same.
    temperature_fn = optim.temperature_schedule(config.aq.initial_temperature,
                                                config.aq.final_temperature,
                                                steps_per_epoch * o.num_epochs)

    mngr = checkpointing.manager(workdir, config.keep_latest, config.keep_best)
    data_step = 0
    if mngr.latest_step() is not None:
        state, data_step = checkpointing.restore(mngr, mngr.latest_step(), state)
    elif config.get("init_from"):
        state = _init_from(config.init_from, state)
    start = int(state.step)
    if start and jax.process_index() == 0:
        print(f"resuming from the checkpoint at step {start} (data position {data_step})",
              flush=True)

    log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    p_train = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                         aq_budget=config.aq.budget, aq_weight=config.aq.weight),
                       axis_name=steps.AXIS, donate_argnums=(0,))
    p_eval = jax.pmap(functools.partial(steps.eval_step, model=model), axis_name=steps.AXIS)
    state_repl = flax.jax_utils.replicate(state)
    ds = pipeline.train_dataset(builder, dcfg, per_process, seed=config.seed,
                                start_step=data_step, process_index=jax.process_index(),
                                process_count=n_proc)
    batches = flax.jax_utils.prefetch_to_device(
        (shard(b, n_dev) for b in tfds.as_numpy(ds)), 2)
    progress = Progress(total_steps, start, enabled=config.progress_bar and
                        jax.process_index() == 0)
    last_eval: dict = {}
    window, t0 = [], time.perf_counter()
    for step in range(start, total_steps):
        temperature = jnp.full((n_dev,), temperature_fn(step), jnp.float32)
        state_repl, metrics = p_train(state_repl, next(batches),
                                      flax.jax_utils.replicate(dropout_rng), temperature)
        window.append(metrics)
        done = step + 1
        if done % config.log_every_steps == 0 or done == total_steps:
            summary = {k: float(np.mean([jax.device_get(m[k][0]) for m in window]))
                       for k in window[0]}
            elapsed = time.perf_counter() - t0
            summary["clips_per_s"] = len(window) * o.batch_size / elapsed
            for group, fn in schedules.items():
                summary[f"lr_{group}"] = float(fn(step))
            if state_repl.shift_state:
                summary["temperature"] = float(temperature_fn(step))
            else:
                summary.pop("budget")  # no AQ layers: nothing to report
            log.write(done, "train", summary)
            progress.update(done, summary)
            window, t0 = [], time.perf_counter()
        is_eval = done % eval_every == 0 or done == total_steps
        if is_eval:
            last_eval = evaluate(p_eval, state_repl, builder, dcfg, config.eval_batch_size,
                                 "1clip")
            log.write(done, "eval", last_eval)
            progress.message(f"step {done}: eval top1 {last_eval['top1']:.4f} "
                             f"top5 {last_eval['top5']:.4f} ({last_eval['num_examples']} clips)")
        if is_eval or done % config.checkpoint_every_steps == 0:
            host_state = first_replica(state_repl)
            checkpointing.save(mngr, done, host_state, data_step=done,
                               metrics={"top1": last_eval["top1"]} if is_eval else None)
            t0 = time.perf_counter()  # saving is not training time
    mngr.wait_until_finished()
    progress.close()
    log.close()
    return last_eval


def _init_from(workdir: str, state: steps.TrainState) -> steps.TrainState:
    """Fine-tuning: parameters and BatchNorm statistics from another run's best checkpoint,
    except the classifier (its classes differ)."""
    mngr = checkpointing.manager(workdir, read_only=True)
    step = checkpointing.best_step(mngr) or mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint to initialise from in {workdir!r}")
    source = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    params = dict(source["params"])
    params["classifier"] = state.params["classifier"]
    return state.replace(params=params, batch_stats=source["batch_stats"])
