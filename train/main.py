"""python -m train.main --config train/configs/<name>.py[:<arg>] --workdir DIR [--config.k=v ...]

Trains per the config (docs/DESIGN.md, "Training recipe") with train.trainer.train_and_evaluate,
resuming from the latest checkpoint in DIR. An argument after the colon picks a variant of the
config, e.g. --config train/configs/ssv2.py:large_aq.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from train.metrics_log import import_tensorflow_quietly, quiet_logs

import_tensorflow_quietly()  # before train.construct imports it

from train import construct, trainer  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_CONFIG = "train/configs/synthetic.py"


def _define_flags() -> None:
    # Defined for the CLI only, and only after _unknown_config_key has looked at the overrides:
    # config_flags applies them while the flag is defined, and an unknown key would end there in a
    # chain of tracebacks and a bare AttributeError.
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Training configuration.",
                                    lock_config=True)
    flags.DEFINE_string("coordinator_address", None,
                        "Multi-host: address of process 0 (host:port).")
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
    flags.DEFINE_bool("allow_config_change", False,
                      "Resume even though the config differs from the run's config.json in keys "
                      "other than run control (the change is listed and the old config kept in "
                      "WORKDIR/config_history/); model and data geometry can never change.")
    flags.mark_flags_as_required(["workdir"])


def _unknown_config_key(argv: list[str]) -> str | None:
    """"--config.a.b: no such config key ..." for the first override the config file lacks."""
    path = DEFAULT_CONFIG
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    file, _, arg = path.partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_config", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    except Exception:  # a broken config file: absl's message says more
        return None
    for arg in argv:
        if arg.startswith(construct.OVERRIDE_PREFIX):
            try:
                key = arg[len(construct.OVERRIDE_PREFIX):].split("=", 1)[0]
                construct.config_leaf(config, key)
            except construct.ConfigError as err:
                return str(err)
    return None


def main(argv):
    del argv
    quiet_logs()
    # Multi-host: flags, or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
    # environment variables (a launcher's), or a cluster jax detects itself (SLURM, Open MPI's
    # mpirun).
    env = os.environ
    coordinator = FLAGS.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    detected = "SLURM_JOB_ID" in env or "OMPI_COMM_WORLD_SIZE" in env
    if coordinator or FLAGS.num_processes or detected:
        num = FLAGS.num_processes or (int(env["JAX_NUM_PROCESSES"])
                                      if "JAX_NUM_PROCESSES" in env else None)
        pid = FLAGS.process_id if FLAGS.process_id is not None else (
            int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
        jax.distributed.initialize(coordinator, num, pid)
    logging.info("process %d/%d, %d local devices: %s", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.local_devices())
    try:
        result = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.allow_config_change)
    except trainer.Interrupted as stop:  # the scheduler's or the user's stop: saved, not a fault
        if jax.process_index() == 0:
            print(stop, flush=True)
        return
    except trainer.RUN_ERRORS as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # not sys.exit: orbax's writer threads would print their failure again
    if jax.process_index() == 0:
        print("final evaluation:", json.dumps(result))
    _print_summary(result, FLAGS.workdir)


def _print_summary(result: dict, workdir: str) -> None:
    """The run in four lines: top-1, how far the shifts moved, and the commands of the figures and
    of the ablation (learned against fixed shifts). Every process reads the checkpoint (Orbax opens
    and restores collectively); process 0 prints."""
    from train import viz  # matplotlib and the figures only when asked for

    change = viz.movement(workdir)
    if jax.process_index() != 0:
        return
    if "top1" in result:
        print(f"top-1 {100 * result['top1']:.1f}% (top-5 {100 * result['top5']:.1f}%) on "
              f"{result['num_examples']} validation clips")
    print(viz.describe_movement(change))
    print(f"figures of the learned shifts: python -m train.viz --workdir {workdir} "
          f"--out {os.path.join(workdir, 'viz')}")
    print("learned against frozen, TSM and no temporal shifts, 3 seeds: python -m train.ablate "
          f"--workdir {workdir.rstrip(os.sep)}_ablation "
          f"--config {config_flags.get_config_filename(FLAGS['config'])}")


if __name__ == "__main__":
    unknown = _unknown_config_key(sys.argv)
    if unknown:
        print(f"train.main: {unknown}", file=sys.stderr)
        sys.exit(2)
    _define_flags()
    app.run(main)
