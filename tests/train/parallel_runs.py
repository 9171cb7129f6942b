"""The small synthetic training in both modes of train.parallel on the host devices this process
was given. Run as a script (test_parallel.py does, on 4 forced host devices):

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.train.parallel_runs DATA OUT

Two runs from seed 0 with a checkpoint every 2 steps: 2 steps under jit resumed under pmap to 4,
and 2 steps under pmap resumed under jit to 4. So at step 2 one run is jit's alone and the other
pmap's alone, and at step 4 each has resumed the other mode's checkpoint. Prints one JSON line:
each run's losses per step, and the largest difference of any array of the state (parameters,
BatchNorm statistics, optimizer state) between the two runs at steps 2 and 4.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

from tests.train.synthetic_runs import metrics_rows, small_config
from train import checkpointing, parallel, trainer


def state(workdir: str, step: int) -> list[np.ndarray]:
    mngr = checkpointing.manager(workdir, read_only=True)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(
        checkpointing.restore(mngr, step, None)[0])]


def largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0)) for x, y in zip(a, b))


def train(data_dir: str, workdir: str, mode: str, steps: int) -> list[float]:
    config = small_config(data_dir, parallelism=mode, max_train_steps=steps, log_every_steps=1)
    config.optim.num_epochs = 1
    trainer.train_and_evaluate(config, workdir)
    return [r["loss"] for r in metrics_rows(workdir) if r["split"] == "train"]


def main(data_dir: str, out: str) -> None:
    assert jax.device_count() == 4, jax.devices()
    runs = {"jit_then_pmap": ["jit", "pmap"], "pmap_then_jit": ["pmap", "jit"]}
    report = {}
    for name, modes in runs.items():
        workdir = os.path.join(out, name)
        for i, mode in enumerate(modes):
            losses = train(data_dir, workdir, mode, 2 * (i + 1))
        report[f"{name}_losses"] = losses
    for step in (2, 4):
        report[f"step{step}_difference"] = largest_difference(
            *(state(os.path.join(out, name), step) for name in runs))
    print(json.dumps(report))

if __name__ == "__main__":
    main(*sys.argv[1:3])
