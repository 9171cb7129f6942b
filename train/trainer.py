"""train_and_evaluate(config, workdir): the training loop. Data-parallel steps (pmap), an evaluation
every `eval_every_epochs`, checkpoints and resume, in the style of the Flax ImageNet example; the
run's parts come from train.construct, the evaluation loop from train.evaluation."""

from __future__ import annotations

import functools
import os
import time

import flax
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from flax.training import common_utils

from rubiks_jax import optim
from rubiks_jax.data import pipeline
from train import checkpointing, construct, evaluation, steps
from train.metrics_log import MetricsLog, Progress


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config`, evaluating each `eval_every_epochs`; resumes from the latest
    checkpoint in `workdir`. Returns the last evaluation's metrics."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        construct.save_config(config, workdir)
    run = construct.build(config)
    o = config.optim
    n_dev, n_proc = jax.local_device_count(), jax.process_count()
    if o.batch_size % (n_dev * n_proc):
        raise ValueError(f"config.optim.batch_size={o.batch_size} must divide evenly over "
                         f"{n_proc} processes x {n_dev} devices")
    total_steps = run.steps_per_epoch * o.num_epochs
    if config.max_train_steps > 0:
        total_steps = min(total_steps, config.max_train_steps)
    eval_every = max(1, run.steps_per_epoch * config.eval_every_epochs)

    mngr = checkpointing.manager(workdir, config.keep_latest, config.keep_best)
    state, data_step = run.state, 0
    if mngr.latest_step() is not None:
        state, data_step = checkpointing.restore(mngr, mngr.latest_step(), state)
    elif config.init_from:
        state = construct.init_from(config.init_from, state)
    start = int(state.step)
    if start and jax.process_index() == 0:
        print(f"resuming from the checkpoint at step {start} (data position {data_step})",
              flush=True)

    log = MetricsLog(workdir, enabled=jax.process_index() == 0)
    p_train = jax.pmap(functools.partial(steps.train_step, model=run.model, tx=run.tx,
                                         loss_fn=run.loss_fn, temperature_fn=run.temperature_fn),
                       axis_name=steps.AXIS, donate_argnums=(0,))
    eval_fn = evaluation.make_eval_fn(run.model)
    state_repl = flax.jax_utils.replicate(state)
    dropout_rng = flax.jax_utils.replicate(run.dropout_rng)
    ds = pipeline.train_dataset(run.builder, run.data, o.batch_size // n_proc, seed=config.seed,
                                start_step=data_step, process_index=jax.process_index(),
                                process_count=n_proc)
    batches = flax.jax_utils.prefetch_to_device(map(common_utils.shard, tfds.as_numpy(ds)), 2)
    progress = Progress(total_steps, start, enabled=config.progress_bar and
                        jax.process_index() == 0)
    last_eval: dict = {}
    window, t0 = [], time.perf_counter()
    for step in range(start, total_steps):
        state_repl, metrics = p_train(state_repl, next(batches), dropout_rng)
        window.append(metrics)
        done = step + 1
        if done % config.log_every_steps == 0 or done == total_steps:
            summary = {k: float(np.mean(v)) for k, v in common_utils.get_metrics(window).items()}
            summary["clips_per_s"] = len(window) * o.batch_size / (time.perf_counter() - t0)
            for group, lr in optim.learning_rates(run.schedules, step).items():
                summary[f"lr_{group}"] = float(lr)
            if state_repl.temperature:
                summary["temperature"] = float(run.temperature_fn(step))
            log.write(done, "train", summary)
            progress.update(done, summary)
            window, t0 = [], time.perf_counter()
        is_eval = done % eval_every == 0 or done == total_steps
        if is_eval:
            last_eval = evaluation.evaluate(eval_fn, state_repl, run.builder, run.data,
                                            config.eval_batch_size, "1clip")
            log.write(done, "eval", last_eval)
            progress.message(f"step {done}: eval top1 {last_eval['top1']:.4f} "
                             f"top5 {last_eval['top5']:.4f} ({last_eval['num_examples']} clips)")
        if is_eval or done % config.checkpoint_every_steps == 0:
            host_state = jax.device_get(flax.jax_utils.unreplicate(state_repl))
            checkpointing.save(mngr, done, host_state, data_step=done,
                               metrics={checkpointing.BEST_METRIC: last_eval["top1"]}
                               if is_eval else None)
            t0 = time.perf_counter()  # saving is not training time
    mngr.wait_until_finished()
    progress.close()
    log.close()
    return last_eval
