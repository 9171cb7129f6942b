"""The training workflow end to end on the synthetic data set (small config, tiny inputs):
CLI, evaluation protocol and counts, prediction, checkpoints, resume and crash recovery."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from train import checkpointing, inference, train
from train.configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = dict(num_frames=4, resize_short=32, crop_size=32)


def small_config(data_dir: str, **kw):
    c = synthetic.get_config()
    c.data.name = "rubiks_synthetic/small"
    c.data.data_dir = data_dir
    for k, v in OVERRIDES.items():
        setattr(c.data, k, v)
    c.data.shuffle_buffer = 64
    c.optim.batch_size = 8
    c.eval_batch_size = 8
    c.optim.num_epochs = 2          # 4 steps per epoch
    c.optim.warmup_epochs = 1
    c.optim.decay_epochs = (2,)
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.progress_bar = False
    for k, v in kw.items():
        setattr(c, k, v)
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = train.train_and_evaluate(small_config(data_dir), workdir)
    return workdir, result


def _lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_writes_metrics_config_events_and_checkpoints(trained):
    workdir, result = trained
    assert result["num_examples"] == 18 and 0 <= result["top1"] <= result["top5"] <= 1
    lines = _lines(workdir)
    train_lines = [m for m in lines if m["split"] == "train"]
    assert [m["step"] for m in train_lines] == [2, 4, 6, 8]
    for key in ("loss", "accuracy", "lr_decay", "lr_no_decay", "lr_shift", "clips_per_s"):
        assert np.isfinite(train_lines[-1][key])
    assert [m["step"] for m in lines if m["split"] == "eval"] == [4, 8]
    assert json.load(open(os.path.join(workdir, "config.json")))["data"]["name"] == \
        "rubiks_synthetic/small"
    assert os.listdir(os.path.join(workdir, "tensorboard", "train"))
    mngr = checkpointing.manager(workdir, read_only=True)
    # Latest two kept (6, 8) plus the evaluated ones among the best three (4, 8).
    assert sorted(mngr.all_steps()) == [4, 6, 8]
    assert checkpointing.best_step(mngr) in (4, 8)


def test_resume_continues_exactly_like_an_uninterrupted_run(data_dir, tmp_path, trained):
    workdir_full, _ = trained
    workdir = str(tmp_path / "interrupted")
    train.train_and_evaluate(small_config(data_dir, max_train_steps=4), workdir)
    train.train_and_evaluate(small_config(data_dir), workdir)  # resumes at 4, runs to 8
    a = checkpointing.restore(checkpointing.manager(workdir_full, read_only=True), 8, None)
    b = checkpointing.restore(checkpointing.manager(workdir, read_only=True), 8, None)
    for x, y in zip(jax.tree_util.tree_leaves(a[0]), jax.tree_util.tree_leaves(b[0])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert a[1] == b[1] == 8


@pytest.mark.parametrize("views, n_views", [("1clip", 1), ("2clip", 6)])
def test_evaluate_counts_every_example_once(trained, views, n_views):
    workdir, _ = trained
    report = inference.evaluate_run(workdir, views, "latest", batch_size=5)  # 18 = 3 x 5 + 3: a padded batch
    assert report["num_examples"] == 18 and report["views"] == views and report["step"] == 8
    assert json.load(open(report["report"]))["top1"] == report["top1"]


def test_predict_on_a_frame_folder(trained, tmp_path):
    import tensorflow as tf

    from rubiks_jax.data.builders.synthetic import CLASSES, render_clip
    workdir, _ = trained
    clip = render_clip(np.random.default_rng(5), 1, 8, 32)
    for i, frame in enumerate(clip):
        tf.io.write_file(str(tmp_path / f"{i:03d}.png"), tf.io.encode_png(frame))
    top = inference.predict(workdir, str(tmp_path), "latest", top=3)
    assert len(top) == 3 and all(name in CLASSES for name, _ in top)
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    with pytest.raises(FileNotFoundError, match="no such video file or frame folder"):
        inference.predict(workdir, str(tmp_path / "missing"), "latest")


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _flags(data_dir, workdir, epochs):
    flags = ["--config", "train/configs/synthetic.py", "--workdir", workdir,
             "--config.data.name=rubiks_synthetic/small", f"--config.data.data_dir={data_dir}",
             "--config.optim.batch_size=8", "--config.eval_batch_size=8",
             f"--config.optim.num_epochs={epochs}", "--config.optim.decay_epochs=(100,)",
             "--config.checkpoint_every_steps=2", "--config.log_every_steps=2"]
    return flags + [f"--config.data.{k}={v}" for k, v in OVERRIDES.items()]


def test_cli_run_killed_mid_training_resumes_from_its_last_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "killed")
    proc = _cli(["train.main", *_flags(data_dir, workdir, epochs=50)])
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
    out = _cli(["train.main", *_flags(data_dir, workdir, epochs=6)]).communicate(timeout=600)[0]
    assert f"resuming from the checkpoint at step {last}" in out, out[-3000:]
    assert "final evaluation:" in out
    lines = _lines(workdir)
    assert lines[-1]["split"] == "eval" and lines[-1]["step"] == 24


def test_training_runs_unchanged_on_four_host_devices(data_dir, tmp_path):
    """The same CLI on 4 fake host devices: the global batch of 8 splits 2 per device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    flags = _flags(data_dir, str(tmp_path / "four"), epochs=1)
    out = _cli(["train.main", *flags], env=env).communicate(timeout=600)[0]
    assert "final evaluation:" in out, out[-3000:]
    report = json.loads(out.split("final evaluation:")[1].strip().splitlines()[0])
    assert report["num_examples"] == 18
