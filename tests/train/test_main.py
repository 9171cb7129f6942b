"""The training CLI: a run killed mid-training resumes from its last checkpoint; the same CLI on
four host devices."""

import json
import os
import signal
import time

from tests.train.synthetic_runs import cli, cli_flags, metrics_rows


def test_cli_run_killed_mid_training_resumes_from_its_last_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    proc = cli(["train.main", *cli_flags(data_dir, workdir, epochs=50)])
    ckpt = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for a finished checkpoint past the first
        steps = [int(d) for d in (os.listdir(ckpt) if os.path.isdir(ckpt) else []) if d.isdigit()]
        if steps and max(steps) >= 4:
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
    out = cli(["train.main", *cli_flags(data_dir, workdir, epochs=6)]).communicate(timeout=600)[0]
    assert f"resuming from the checkpoint at step {last}" in out, out[-3000:]
    assert "final evaluation:" in out
    lines = metrics_rows(workdir)
    assert lines[-1]["split"] == "eval" and lines[-1]["step"] == 24
    for split in ("train", "eval"):  # steps rerun after the resume are not logged twice
        logged = [m["step"] for m in lines if m["split"] == split]
        assert logged == sorted(set(logged))


def test_training_runs_unchanged_on_four_host_devices(data_dir, tmp_path):
    """The same CLI on 4 fake host devices: the global batch of 8 splits 2 per device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    flags = cli_flags(data_dir, str(tmp_path / "four"), epochs=1)
    out = cli(["train.main", *flags], env=env).communicate(timeout=600)[0]
    assert "final evaluation:" in out, out[-3000:]
    report = json.loads(out.split("final evaluation:")[1].strip().splitlines()[0])
    assert report["num_examples"] == 18
