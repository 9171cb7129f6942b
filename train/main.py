"""python -m train.main --config train/configs/<name>.py[:<arg>] --workdir DIR [--config.k=v ...]

Trains per the config (docs/DESIGN.md, "Training recipe") with train.trainer.train_and_evaluate,
resuming from the latest checkpoint in DIR. An argument after the colon picks a variant of the
config, e.g. --config train/configs/ssv2.py:large_aq.
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from train import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
config_flags.DEFINE_config_file("config", "train/configs/synthetic.py", "Training configuration.",
                                lock_config=True)
flags.DEFINE_string("coordinator_address", None, "Multi-host: address of process 0 (host:port).")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax and TF log every step at INFO
        logging.set_verbosity(logging.WARNING)
    # Multi-host: flags, or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
    # environment variables (a launcher's), or a cluster jax detects itself (e.g. SLURM).
    env = os.environ
    coordinator = FLAGS.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if coordinator or FLAGS.num_processes or "SLURM_JOB_ID" in env:
        num = FLAGS.num_processes or (int(env["JAX_NUM_PROCESSES"])
                                      if "JAX_NUM_PROCESSES" in env else None)
        pid = FLAGS.process_id if FLAGS.process_id is not None else (
            int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
        jax.distributed.initialize(coordinator, num, pid)
    logging.info("process %d/%d, %d local devices: %s", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.local_devices())
    result = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        print("final evaluation:", json.dumps(result))


if __name__ == "__main__":
    app.run(main)
