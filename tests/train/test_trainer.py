"""The training loop end to end on the synthetic data set (small config, tiny inputs): metrics,
config, events and checkpoints; a restart (resumes like an uninterrupted run, keeps the best
checkpoint, logs each step once); a finished run rerun; data faults found before training or named
by file."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from tests.train.synthetic_runs import metrics_rows, small_config
from train import checkpointing, construct, trainer


def test_training_writes_metrics_config_events_and_checkpoints(trained):
    workdir, result = trained
    assert result["num_examples"] == 18 and 0 <= result["top1"] <= result["top5"] <= 1
    lines = metrics_rows(workdir)
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
    assert mngr.best_step() in (4, 8)


def test_restart_resumes_like_an_uninterrupted_run_keeps_the_best_and_logs_each_step_once(
        data_dir, tmp_path, trained):
    workdir = str(tmp_path / "crashed")
    trainer.train_and_evaluate(small_config(data_dir, max_train_steps=6), workdir)
    # The process died before checkpoint 6 was written: the rerun resumes at 4 and logs 6 again.
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
    trainer.train_and_evaluate(small_config(data_dir), workdir)
    mngr = checkpointing.manager(workdir, read_only=True)
    # 4 was evaluated before the restart: its top-1 survives it, so the best-3 policy keeps it.
    assert sorted(mngr.all_steps()) == [4, 6, 8]
    assert mngr.metrics(4) is not None
    assert mngr.best_step() in (4, 8)
    rows = metrics_rows(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6, 8]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [4, 6, 8]
    # The resumed run continues exactly like the uninterrupted one.
    a = checkpointing.restore(checkpointing.manager(trained[0], read_only=True), 8, None)
    b = checkpointing.restore(mngr, 8, None)
    for x, y in zip(jax.tree_util.tree_leaves(a[0]), jax.tree_util.tree_leaves(b[0])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert a[1] == b[1] == 8


def test_a_finished_run_rerun_reports_its_last_evaluation(data_dir, tmp_path, trained):
    workdir = str(tmp_path / "finished")
    shutil.copytree(trained[0], workdir)
    again = trainer.train_and_evaluate(small_config(data_dir), workdir)
    assert again == trained[1]


def test_a_missing_eval_split_is_found_before_training(data_dir, tmp_path):
    workdir = str(tmp_path / "no_eval")
    config = small_config(data_dir)
    config.data.eval_split = "test"
    with pytest.raises(construct.DataError, match="config.data.eval_split='test'.*no such split"):
        trainer.train_and_evaluate(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "1"))


def test_a_corrupt_record_file_is_named(data_dir, tmp_path):
    copy = str(tmp_path / "tfds")
    shutil.copytree(data_dir, copy)
    (path,) = glob.glob(os.path.join(copy, "rubiks_synthetic", "small", "*", "*train.tfrecord*"))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # garbage in the middle: the first record still reads
        f.seek(size // 2)
        f.write(os.urandom(2048))
    with pytest.raises(construct.DataError, match=os.path.basename(path)):
        trainer.train_and_evaluate(small_config(copy), str(tmp_path / "run"))
