"""Fault injection: the training CLI as a subprocess, killed at random points (also mid-save),
stopped by SIGTERM / SIGINT, diverging, resuming from a corrupted checkpoint, writing to a full
disk; what survives each, and what it prints. Each in both modes of config.parallelism (pmap, jit);
the reference run (`trained`) is pmap's, so the jit runs also check that the modes agree bit for
bit and resume each other's checkpoints."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.train.synthetic_runs import ROOT, cli, metrics_rows, small_flags
from train import checkpointing, parallel

mode = pytest.mark.parametrize("mode", parallel.MODES)


def _flags(data_dir: str, workdir: str, mode: str) -> list[str]:
    return small_flags(data_dir, workdir) + [f"--config.parallelism={mode}"]


def _steps(workdir: str) -> list[int]:
    """Finished checkpoints (Orbax writes into *.orbax-checkpoint-tmp* and renames when done)."""
    ckpt = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in (os.listdir(ckpt) if os.path.isdir(ckpt) else []) if d.isdigit())


def _saving(workdir: str) -> bool:
    return bool(glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*")))


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 300, poll: float = 0.02) -> bool:
    """Polls `condition` until it holds (True) or the process has ended (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("the training CLI made no progress")


def _finish(args: list[str], **kw) -> tuple[int, str]:
    proc = cli(["train.main", *args], **kw)
    out = proc.communicate(timeout=600)[0]
    return proc.returncode, out


def _state(workdir: str, step: int):
    return checkpointing.restore(checkpointing.manager(workdir, read_only=True), step, None)[0]


def _assert_each_step_logged_once(rows: list[dict]) -> None:
    """metrics.jsonl rows: a step rerun after a resume is not logged again."""
    for split in ("train", "eval"):
        logged = [m["step"] for m in rows if m["split"] == split]
        assert logged == sorted(set(logged)), (split, logged)


def _assert_identical(a, b) -> None:
    import jax
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@mode
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_run(data_dir, trained, tmp_path,
                                                                  mode):
    """Two SIGKILLs: one the moment a save starts, then one a random time after a checkpoint of
    the resumed run landed; the third launch finishes. Bit-identical to the uninterrupted run."""
    rng = random.Random(0)
    workdir = str(tmp_path / "killed")
    flags = _flags(data_dir, workdir, mode)
    for when in ("mid_save", "random"):
        before = _steps(workdir)
        proc = cli(["train.main", *flags])
        if when == "mid_save":
            running = _wait_for(proc, lambda: _saving(workdir))
        else:
            running = _wait_for(proc, lambda: _steps(workdir) != before and
                                _steps(workdir)[-1] > max(before, default=0))
            time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert running or proc.returncode == 0, proc.stdout.read()[-3000:]
    rc, out = _finish(flags)
    assert rc == 0 and "final evaluation:" in out, out[-3000:]
    _assert_identical(_state(workdir, 8), _state(trained[0], 8))
    _assert_each_step_logged_once(metrics_rows(workdir))


@pytest.mark.slow
@mode
def test_sigterm_and_ctrl_c_save_and_exit_0(data_dir, tmp_path, mode):
    workdir = str(tmp_path / "stopped")
    # Checkpoints every 3 steps: a stop between them saves a step of its own.
    flags = _flags(data_dir, workdir, mode) + ["--config.optim.num_epochs=50",
                                              "--config.checkpoint_every_steps=3"]
    stops = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = _steps(workdir)
        proc = cli(["train.main", *flags])
        assert _wait_for(proc, lambda: _steps(workdir) and
                         _steps(workdir)[-1] > max(before, default=0), poll=0.2)
        time.sleep(1.0)
        sent = time.time()
        proc.send_signal(sig)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, out[-3000:]
        assert time.time() - sent < 60
        line = [ln for ln in out.splitlines() if ln.startswith("stopped by")]
        assert line and signal.Signals(sig).name in line[0], out[-3000:]
        step = int(line[0].split("after step ")[1].split(":")[0])
        assert step == _steps(workdir)[-1]  # that step's checkpoint landed
        assert "run the same command again to resume" in line[0]
        assert "Traceback" not in out
        stops.append(step)
    rc, out = _finish(flags + ["--config.max_train_steps=" + str(stops[-1] + 1)])
    assert f"resuming from the checkpoint at step {stops[-1]}" in out, out[-3000:]
    assert stops[1] > stops[0]


@pytest.mark.slow
@mode
def test_divergence_stops_the_run_and_keeps_only_finite_checkpoints(data_dir, tmp_path, mode):
    workdir = str(tmp_path / "diverged")
    flags = _flags(data_dir, workdir, mode) + ["--config.optim.kind=sgd",
                                              "--config.optim.base_lr=1e4",
                                              "--config.optim.num_epochs=10"]
    rc, out = _finish(flags)
    assert rc == 1, out[-3000:]
    error = [ln for ln in out.splitlines() if ln.startswith("error: step")]
    assert error and "not finite" in error[0] and "config.max_bad_steps" in error[0], out[-3000:]
    bad_step = int(error[0].split("error: step ")[1].split(":")[0])
    steps = _steps(workdir)
    assert steps and max(steps) < bad_step
    for step in steps:  # restore checks every array for NaN / Inf
        _state(workdir, step)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # strict JSON: no bare NaN
        for line in f:
            json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


@mode
def test_a_corrupted_latest_checkpoint_is_set_aside_and_the_one_before_resumed(trained, data_dir,
                                                                               tmp_path, mode):
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(trained[0], workdir)
    data = max(glob.glob(os.path.join(workdir, "checkpoints", "8", "state", "**", "d", "*"),
                         recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:  # 4 KiB of garbage inside the arrays (0xFF: NaN in float32)
        f.seek(os.path.getsize(data) // 2)
        f.write(b"\xff" * 4096)
    flags = _flags(data_dir, workdir, mode) + ["--config.optim.num_epochs=3",
                                              "--allow_config_change"]
    rc, out = _finish(flags)
    assert rc == 0, out[-3000:]
    # compressed arrays: the garbage decodes to NaN, to finite values (the checksum) or not at all
    assert "checkpoint 8 cannot be restored" in out, out[-3000:]
    assert "resuming from the checkpoint at step 6" in out
    assert os.path.isdir(os.path.join(workdir, checkpointing.QUARANTINE, "8"))
    assert _steps(workdir)[-1] == 12
    # More epochs than the run planned: a listed config change, accepted explicitly.
    assert "config changed at step 8" in out and "optim.num_epochs: 2 -> 3" in out, out[-3000:]
    assert glob.glob(os.path.join(workdir, "config_history", "until_step8_*.json"))
    rows = metrics_rows(workdir)
    assert rows[-1]["split"] == "eval" and rows[-1]["step"] == 12
    _assert_each_step_logged_once(rows)  # steps 7 and 8 ran again after the resume


@pytest.mark.slow
@mode
def test_a_failed_save_stops_the_run_with_one_clear_line(data_dir, tmp_path, mode):
    """A disk that fills up: files may not grow past 4 MiB (ulimit -f; SIGXFSZ ignored, so the
    write fails with EFBIG), a checkpoint's data file needs ~14."""
    workdir = str(tmp_path / "full")
    flags = _flags(data_dir, workdir, mode) + ["--config.optim.num_epochs=10"]
    proc = subprocess.Popen(
        ["bash", "-c", 'ulimit -f 4096 && trap "" XFSZ && exec "$0" -m train.main "$@"',
         sys.executable, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: saving a checkpoint in") and "File too large" in last, last
    assert _steps(workdir) == []
    train_steps = [m["step"] for m in metrics_rows(workdir) if m["split"] == "train"]
    assert max(train_steps) <= 6  # stopped at once (saves every 2 steps; 40 planned)


def test_an_unknown_config_key_is_one_line(tmp_path):
    rc, out = _finish(["--workdir", str(tmp_path), "--config.optim.bach_size=8"])
    assert rc == 2
    last = out.strip().splitlines()[-1]
    assert last.startswith("train.main: --config.optim.bach_size: no such config key (config.optim "
                           "has: "), out[-2000:]
    assert "batch_size" in last
    assert "Traceback" not in out
