"""Trained runs at inference: the evaluation protocols and their counts, prediction on a frame
folder, and inference built without the training loop."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.train.synthetic_runs import ROOT
from train import inference


@pytest.mark.parametrize("views, n_views", [("1clip", 1), ("2clip", 6)])
def test_evaluate_counts_every_example_once(trained, views, n_views):
    workdir, _ = trained
    # 18 = 3 x 5 + 3: a padded batch
    report = inference.evaluate_run(workdir, views, "latest", batch_size=5)
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


@pytest.mark.parametrize("module", ["train.inference", "train.evaluate", "train.predict"])
def test_inference_and_its_clis_do_not_import_the_training_loop(module):
    code = f"import sys, {module}\nprint('train.trainer' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
