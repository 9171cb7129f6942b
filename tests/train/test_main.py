"""The training CLI on four host devices, and as two processes of two devices each (multi-host over
localhost). Killed, stopped and resumed runs of the CLI: test_faults.py."""

import json
import os
import re
import socket

import jax
import numpy as np
import pytest

from tests.conftest import run_once
from tests.train.synthetic_runs import cli, cli_flags
from train import checkpointing, construct, parallel

pytestmark = pytest.mark.slow


# One SGD step: what the two processes must agree on is the first update. (Later steps amplify
# rounding: the per-channel normalised shift gradients of rows near zero already differ by up to
# 8% of their step after one step, and after four the losses differ by 1%, as for any two
# reduction orders.)
ONE_STEP = ["--config.optim.kind=sgd", "--config.optim.base_lr=0.1",
            "--config.optim.warmup_epochs=0", "--config.max_train_steps=1",
            "--config.checkpoint_every_steps=1"]


@pytest.fixture(scope="session")
def four_devices(data_dir, tmp_path_factory):
    """(workdir, output) of the CLI run on 4 fake host devices: the global batch of 8 splits 2 per
    device; one step, then the final evaluation. Made once per test run (shared by the workers)."""
    with run_once(tmp_path_factory, "four_devices") as (path, done):
        workdir, output = path / "run", path / "output.txt"
        if not done:
            env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                       JAX_PLATFORMS="cpu")
            output.write_text(cli(["train.main", *cli_flags(data_dir, str(workdir), epochs=1),
                                   *ONE_STEP], env=env).communicate(timeout=600)[0])
    return str(workdir), output.read_text()


def _final_report(out: str) -> dict:
    assert "final evaluation:" in out, out[-3000:]
    return json.loads(out.split("final evaluation:")[1].strip().splitlines()[0])


def test_training_runs_unchanged_on_four_host_devices(four_devices):
    assert _final_report(four_devices[1])["num_examples"] == 18


def test_the_run_ends_with_top1_shift_movement_and_the_figures_and_ablation_commands(four_devices):
    workdir, out = four_devices
    tail = out.split("final evaluation:")[1].strip().splitlines()[1:]
    report = _final_report(out)
    assert tail[0] == (f"top-1 {100 * report['top1']:.1f}% (top-5 {100 * report['top5']:.1f}%) "
                       "on 18 validation clips"), tail
    assert tail[1].startswith("the shifts moved from their initialisation by mean |d - d0| = dt ")
    assert "dt per stage: layer0 " in tail[1]
    assert tail[2] == (f"figures of the learned shifts: python -m train.viz --workdir {workdir} "
                       f"--out {os.path.join(workdir, 'viz')}"), tail
    assert tail[3] == ("learned against frozen, TSM and no temporal shifts, 3 seeds: python -m "
                       f"train.ablate --workdir {workdir}_ablation "
                       "--config train/configs/synthetic.py"), tail
    # No warning at all: none of ours or of what we call (absl's "W1207 ..." lines, "WARNING:absl:",
    # deprecations), and TensorFlow's C++ start-up notices dropped (metrics_log).
    python_warnings = [line for line in out.splitlines()
                       if re.match(r"W\d{4} |I\d{4} |WARNING", line) or "deprecated" in line]
    assert not python_warnings, python_warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("mode", parallel.MODES)
def test_two_processes_train_like_one_process_with_their_devices(data_dir, tmp_path,
                                                                  four_devices, mode):
    """jax.distributed over localhost: 2 processes x 2 host devices (CPU collectives: gloo) take
    the single-process 4-device run's step (pmap), and evaluate every clip once; in either mode
    (jit: one Mesh over both processes' devices, global arrays, Orbax saving them directly)."""
    workdir = str(tmp_path / "two_processes")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    address = f"localhost:{_free_port()}"
    procs = [cli(["train.main", *cli_flags(data_dir, workdir, epochs=1), *ONE_STEP,
                  f"--config.parallelism={mode}",
                  f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"],
                 env=env) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    assert "final evaluation:" not in outs[1]  # process 0 reports
    mine, single = _final_report(outs[0]), _final_report(four_devices[1])
    assert mine["num_examples"] == single["num_examples"] == 18  # every clip counted once
    assert abs(mine["top1"] - single["top1"]) <= 1 / 18
    restore = lambda w: checkpointing.restore(checkpointing.manager(w, read_only=True), 1, None)
    (a, data_a), (b, data_b) = restore(workdir), restore(four_devices[0])
    assert data_a == data_b == 1
    init = construct.build(construct.load_config(workdir)).state
    update = _flat(b["params"]) - _flat(init.params)
    differ = _flat(a["params"]) - _flat(b["params"])
    # A missing cross-process reduction or a wrong data shard makes this O(1); rounding: ~1e-3.
    assert np.linalg.norm(differ) / np.linalg.norm(update) < 1e-2
    np.testing.assert_allclose(_flat(a["batch_stats"]), _flat(b["batch_stats"]), rtol=1e-5,
                               atol=1e-6)
