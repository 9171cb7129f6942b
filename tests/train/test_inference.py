"""Trained runs at inference: the evaluation protocols and their counts, prediction on frame
folders (batched), a workdir that stands alone (its data directory gone, or moved and named by a
--config override), and inference built without the training loop."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rubiks_jax.data.builders.synthetic import CLASSES
from tests.train.synthetic_runs import ROOT, cli
from train import construct, inference


@pytest.mark.parametrize("views, n_views", [("1clip", 1), ("2clip", 6)])
def test_evaluate_counts_every_example_once(trained, views, n_views):
    workdir, _ = trained
    # 18 = 3 x 5 + 3: a padded batch
    report = inference.evaluate_run(workdir, views, "latest", batch_size=5)
    assert report["num_examples"] == 18 and report["views"] == views and report["step"] == 8
    assert json.load(open(report["report"]))["top1"] == report["top1"]


def _frame_folder(path, seed: int) -> str:
    """A synthetic clip (8 frames of 32x32) written as PNG frames into `path`."""
    import tensorflow as tf

    from rubiks_jax.data.builders.synthetic import render_clip
    path.mkdir()
    for i, frame in enumerate(render_clip(np.random.default_rng(seed), seed % 9, 8, 32)):
        tf.io.write_file(str(path / f"{i:03d}.png"), tf.io.encode_png(frame))
    return str(path)


def test_predict_on_a_frame_folder(trained, tmp_path):
    workdir, _ = trained
    [top] = inference.predict(workdir, [_frame_folder(tmp_path / "clip", 5)], "latest", top=3)
    assert len(top) == 3 and all(name in CLASSES for name, _ in top)
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    with pytest.raises(FileNotFoundError, match="no such video file or frame folder"):
        inference.predict(workdir, [str(tmp_path / "missing")], "latest")
    with pytest.raises(TypeError, match="a list of video files"):
        inference.predict(workdir, str(tmp_path / "clip"), "latest")


@pytest.fixture
def moved(trained, data_dir, tmp_path):
    """(a copy of the trained workdir whose config names a data directory that no longer exists,
    the real data directory)."""
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    gone = tmp_path / "data"
    shutil.copytree(data_dir, gone)
    config = construct.load_config(workdir)
    config.data.data_dir = str(gone)
    construct.save_config(config, workdir)
    shutil.rmtree(gone)
    return workdir, data_dir


def test_a_workdir_predicts_and_evaluates_without_its_data_directory(moved, tmp_path):
    workdir, data_dir = moved
    assert json.load(open(os.path.join(workdir, construct.CLASSES_FILE))) == list(CLASSES)
    clips = [_frame_folder(tmp_path / f"clip{i}", i) for i in range(3)]
    batched = inference.predict(workdir, clips, "latest", top=9, batch_size=2)  # 2 + 1 (padded)
    alone = [inference.predict(workdir, [c], "latest", top=9)[0] for c in clips]
    assert len(batched) == 3
    for b, a in zip(batched, alone):
        assert [n for n, _ in b] == [n for n, _ in a]
        np.testing.assert_allclose([s for _, s in b], [s for _, s in a], rtol=1e-5, atol=1e-6)

    # The data set, moved: named by an override; the train split is not read.
    config = construct.apply_overrides(construct.load_config(workdir), [
        f"--config.data.data_dir={data_dir}", "--config.data.train_split=no_such_split"])
    report = inference.evaluate_run(workdir, "1clip", "latest", batch_size=6, config=config)
    assert report["num_examples"] == 18 and report["step"] == 8
    assert not os.path.exists(str(tmp_path / "data"))  # nothing prepared it again


def test_a_workdir_without_classes_json_reads_them_from_its_data_set(moved):
    workdir, data_dir = moved
    os.remove(os.path.join(workdir, construct.CLASSES_FILE))  # a run from before the file
    with pytest.raises(FileNotFoundError, match="classes.json not found, and the run's data set"):
        inference.restore(workdir, "latest")
    config = construct.apply_overrides(construct.load_config(workdir),
                                       [f"--config.data.data_dir={data_dir}"])
    run, _, _ = inference.restore(workdir, "latest", config)
    assert run.class_names == list(CLASSES) and run.builder is None


def test_the_inference_clis_take_config_overrides(moved, tmp_path):
    workdir, data_dir = moved
    clips = [_frame_folder(tmp_path / f"clip{i}", i) for i in range(2)]
    evaluate = cli(["train.evaluate", "--workdir", workdir, "--step", "latest", "--batch_size",
                    "6", f"--config.data.data_dir={data_dir}"])
    predict = cli(["train.predict", "--workdir", workdir, "--step", "latest", "--top", "2",
                   "--config.model.impl=xla", *clips])
    unknown = cli(["train.predict", "--workdir", workdir, "--config.data.dat_dir=/x", clips[0]])
    out, _ = evaluate.communicate(timeout=600)
    assert evaluate.returncode == 0, out
    # No INFO records from Python loggers (orbax, TFDS): absl's "I1203 10:00:00.0 ... file.py:12]".
    assert not re.search(r"^I\d{4} .*\.py:\d+\]", out, re.MULTILINE), out
    assert json.loads(out[out.index("{"):])["num_examples"] == 18
    out, _ = predict.communicate(timeout=600)
    assert predict.returncode == 0, out
    lines = out.splitlines()
    for clip in clips:  # the path, then "  score  name" per class
        i = lines.index(clip)
        assert [line.split()[1] in CLASSES for line in lines[i + 1:i + 3]] == [True, True], out
    out, _ = unknown.communicate(timeout=600)
    assert unknown.returncode == 1
    assert "--config.data.dat_dir: no such config key (config.data has: " in out, out


@pytest.mark.parametrize("module", ["train.inference", "train.evaluate", "train.predict"])
def test_inference_and_its_clis_do_not_import_the_training_loop(module):
    code = f"import sys, {module}\nprint('train.trainer' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
