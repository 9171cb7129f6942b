"""train_and_evaluate(config, workdir): the training loop. Data-parallel steps (pmap, or jit over
one Mesh of all devices: config.parallelism, train.parallel), an evaluation every
`eval_every_epochs`, checkpoints and resume, in the style of the Flax ImageNet example; the run's
parts come from train.construct, the evaluation loop from train.evaluation.

What a fault costs (README, "Fault tolerance"): every check that can fail runs before the first
step; a non-finite step is never applied or saved (the run stops, or skips up to
config.max_bad_steps of them); SIGTERM / SIGINT save and stop (Interrupted); a failed save stops
the run at once; a checkpoint that does not restore intact is set aside and the one before used.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rubiks_jax import optim
from rubiks_jax.data import pipeline
from train import checkpointing, construct, evaluation, parallel, preemption, steps
from train.metrics_log import MetricsLog, Progress, last_row


class Divergence(RuntimeError):
    """More non-finite steps than config.max_bad_steps; nothing after the last checkpoint is kept."""


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped the run after `step`, whose checkpoint is saved in `workdir`."""

    def __init__(self, step: int, workdir: str, signal_name: str):
        super().__init__(f"stopped by {signal_name} after step {step}: its checkpoint is saved in "
                         f"{os.path.join(os.path.abspath(workdir), 'checkpoints')}; run the same "
                         "command again to resume")
        self.step, self.workdir, self.signal_name = step, workdir, signal_name


# What main reports in one line (no traceback): faults of the config, data, disk or run.
RUN_ERRORS = (construct.ConfigError, construct.DataError, checkpointing.CheckpointError,
              Divergence)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False) -> dict:
    """Trains per `config`, evaluating each `eval_every_epochs`; resumes from the latest intact
    checkpoint in `workdir`. Returns the last evaluation's metrics.

    Raises, before any data is read: construct.ConfigError (a bad value; on a resume, a config that
    differs from the run's: see construct.record_config, `allow_config_change`); before the first
    step: construct.DataError, checkpointing.CheckpointError (workdir not writable, too little
    disk); during the run: Divergence, checkpointing.CheckpointError (a failed save), Interrupted.
    """
    n_dev, n_proc = jax.local_device_count(), jax.process_count()
    construct.check_config(config, n_proc, n_dev)
    _check_writable(workdir)
    mngr = checkpointing.manager(workdir, config.keep_latest, config.keep_best)
    construct.record_config(config, workdir, allow_config_change, step=mngr.latest_step())
    run = construct.build(config)
    construct.save_class_names(run.class_names, workdir)  # inference then needs no data set
    construct.check_data(run.builder, run.data)
    checkpointing.check_free_space(workdir, run.state)
    o = config.optim
    total_steps = run.steps_per_epoch * o.num_epochs
    if config.max_train_steps > 0:
        total_steps = min(total_steps, config.max_train_steps)
    eval_every = max(1, run.steps_per_epoch * config.eval_every_epochs)
    lead = jax.process_index() == 0
    say = functools.partial(print, flush=True) if lead else (lambda *a, **k: None)

    devices = parallel.get(config.parallelism)
    state, data_step = run.state, 0
    restored = checkpointing.restore_latest_intact(mngr, devices.abstract(state), workdir, log=say)
    if restored is not None:
        state, data_step, _ = restored
        state = devices.restored(state)
    else:
        if config.init_from:
            state = construct.init_from(config.init_from, state)
        state = devices.place(state)
    start = int(devices.first(state.step))
    if start:
        say(f"resuming from the checkpoint at step {start} (data position {data_step})")
    if start >= total_steps:
        last = last_row(workdir, "eval") or {}
        say(f"the run in {workdir} is complete ({start} of {total_steps} steps); its last "
            "evaluation is below (raise config.optim.num_epochs or config.max_train_steps to go on)")
        return last

    log = MetricsLog(workdir, enabled=lead)
    p_train = devices.train_step(functools.partial(
        steps.train_step, model=run.model, tx=run.tx, loss_fn=run.loss_fn,
        temperature_fn=run.temperature_fn, accumulate_steps=o.accumulate_steps))
    eval_fn = evaluation.make_eval_fn(run.model, devices=devices)
    state_repl = state
    dropout_rng = devices.place(run.dropout_rng)
    ds = pipeline.train_dataset(run.builder, run.data, o.batch_size // n_proc, seed=config.seed,
                                start_step=data_step, process_index=jax.process_index(),
                                process_count=n_proc)
    batches = devices.batches(tfds.as_numpy(ds))
    progress = Progress(total_steps, start, enabled=config.progress_bar and lead)
    guard = _FiniteGuard(config.max_bad_steps, progress.message, mngr)
    last_eval: dict = {}
    window, t0 = [], time.perf_counter()
    try:
        with preemption.StopRequests() as stop:
            for step in range(start, total_steps):
                done = step + 1
                state_repl, metrics = p_train(state_repl, _next(batches, run), dropout_rng)
                metrics = devices.first(metrics)
                window.append(metrics)
                guard.add(done, metrics)
                checkpointing.check_saves(mngr)
                if done % config.log_every_steps == 0 or done == total_steps:
                    guard.check_all()
                    summary = _summary(window)
                    summary["clips_per_s"] = len(window) * o.batch_size / (time.perf_counter() - t0)
                    for group, lr in optim.learning_rates(run.schedules, step).items():
                        summary[f"lr_{group}"] = float(lr)
                    if state_repl.temperature:
                        summary["temperature"] = float(run.temperature_fn(step))
                    log.write(done, "train", summary)
                    progress.update(done, summary)
                    window, t0 = [], time.perf_counter()
                is_eval = done % eval_every == 0 or done == total_steps
                saved = False
                if is_eval or done % config.checkpoint_every_steps == 0:
                    guard.check_all()
                    metrics_ = None
                    if is_eval:
                        try:
                            last_eval = evaluation.evaluate(eval_fn, state_repl, run.builder,
                                                            run.data, config.eval_batch_size,
                                                            "1clip")
                        except BaseException as err:  # keep the step's training; then report
                            _save(mngr, done, devices, state_repl)
                            checkpointing.wait(mngr)
                            if isinstance(err, tf.errors.OpError):
                                raise _data_error(run, run.data.eval_split, err) from err
                            raise
                        log.write(done, "eval", last_eval)
                        progress.message(f"step {done}: eval top1 {last_eval['top1']:.4f} top5 "
                                         f"{last_eval['top5']:.4f} ({last_eval['num_examples']} "
                                         "clips)")
                        metrics_ = {checkpointing.BEST_METRIC: last_eval["top1"]}
                    _save(mngr, done, devices, state_repl, metrics_)
                    saved = True
                    t0 = time.perf_counter()  # saving is not training time
                if stop.requested():
                    guard.check_all()
                    if not saved:
                        _save(mngr, done, devices, state_repl)
                    checkpointing.wait(mngr)
                    raise Interrupted(done, workdir, stop.signal_name)
        checkpointing.wait(mngr)
    finally:
        try:  # a save in flight is a good state: let it land whatever stopped the loop
            mngr.wait_until_finished()
        except Exception:  # already reported (or about to be) by check_saves / wait
            pass
        progress.close()
        log.close()
    return last_eval


def _save(mngr, step: int, devices: parallel.Parallel, state_repl,
          metrics: dict | None = None) -> None:
    checkpointing.save(mngr, step, devices.to_save(state_repl), data_step=step, metrics=metrics)


def _next(batches, run: construct.Components) -> dict:
    """The next train batch; a read error names the file (TFRecord errors give only an offset)."""
    try:
        return next(batches)
    except tf.errors.OpError as err:
        raise _data_error(run, run.data.train_split, err) from err


def _data_error(run: construct.Components, split: str, err) -> construct.DataError:
    bad = construct.find_bad_file(run.builder, split)
    return construct.DataError(bad or f"reading {run.data.name} {split!r}: {err.message}")


def _summary(window: list[dict]) -> dict:
    """Means over the window's steps of every metric (NaN when a skipped step had one)."""
    rows = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *jax.device_get(window))
    finite = rows.pop("finite")
    summary = {k: float(np.mean(v)) for k, v in rows.items()}
    if not np.all(finite):
        summary["skipped_steps"] = int(np.sum(~np.asarray(finite, bool)))
    return summary


class _FiniteGuard:
    """Reads each step's "finite" flag one step late (so the host does not wait for every step)
    and stops the run when more than `max_bad` steps were not finite."""

    def __init__(self, max_bad: int, message, mngr):
        self.max_bad, self.message, self.mngr = max_bad, message, mngr
        self.pending: list[tuple[int, dict]] = []
        self.bad = 0

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))
        if len(self.pending) > 1:
            self._check(self.pending[:-1])
            self.pending = self.pending[-1:]

    def check_all(self) -> None:
        self._check(self.pending)
        self.pending = []

    def _check(self, entries) -> None:
        for step, metrics in entries:
            if bool(np.asarray(metrics["finite"])):
                continue
            self.bad += 1
            loss = float(np.asarray(metrics["loss"]))
            if self.bad > self.max_bad:
                latest = self.mngr.latest_step()
                kept = (f"the last checkpoint (step {latest}) is intact" if latest is not None
                        else "no checkpoint was saved yet")
                raise Divergence(
                    f"step {step}: the loss or a gradient is not finite (loss {loss}); the run "
                    f"stops without saving, {kept}. Lower the learning rate, or set "
                    f"config.max_bad_steps (now {self.max_bad}) to skip such steps.")
            self.message(f"step {step}: the loss or a gradient is not finite (loss {loss}); the "
                         f"step is skipped ({self.bad} of at most {self.max_bad})")


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise checkpointing.CheckpointError(f"workdir {workdir} is not writable: {err}") from err
