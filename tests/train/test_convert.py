"""A published checkpoint converted into a workdir (python -m train.convert): evaluation, prediction
and fine-tuning (init_from) read it as a trained run, with the converted variables."""

import os

import jax
import numpy as np
import pytest

from rubiks_jax.convert import from_official
from rubiks_jax.data.builders.synthetic import CLASSES, render_clip
from tests.test_convert import _clip, _official_file
from tests.train.synthetic_runs import cli, small_config
from train import checkpointing, construct, inference
from train.convert import default_config, write_workdir


@pytest.mark.slow
def test_converted_workdir_is_a_run(data_dir, tmp_path):
    import tensorflow as tf

    num_frames = 4
    construct.load_data(small_config(data_dir))  # prepared: convert keeps its class names
    path, _ = _official_file(tmp_path, "tiny", "rubiks3d-aq", num_frames, _clip(num_frames, 32, 32),
                             num_classes=len(CLASSES))
    workdir = str(tmp_path / "converted")
    proc = cli(["train.convert", path, "--workdir", workdir,
                "--config", "train/configs/synthetic.py",
                "--config.data.name=rubiks_synthetic/small", f"--config.data.data_dir={data_dir}",
                "--config.data.resize_short=32", "--config.data.crop_size=32"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    config = construct.load_config(workdir)
    assert (config.model.tier, config.model.variant, config.data.num_frames) == (
        "tiny", "rubiks3d_aq", num_frames)
    assert construct.load_class_names(workdir, config) == list(CLASSES)  # from classes.json
    assert os.path.exists(os.path.join(workdir, construct.CLASSES_FILE))

    _, variables = from_official(path)
    run, state, step = inference.restore(workdir, "best")
    assert step == 0 and set(state.variables()) == {"params", "batch_stats", "temperature"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.variables(), variables)

    report = inference.evaluate_run(workdir, "1clip", "best", batch_size=6)
    assert report["num_examples"] == 18 and report["step"] == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(render_clip(np.random.default_rng(0), 1, 8, 32)):
        tf.io.write_file(str(frames / f"{i:03d}.png"), tf.io.encode_png(frame))
    [top] = inference.predict(workdir, [str(frames)], "best", top=3)
    assert len(top) == 3 and all(name in CLASSES for name, _ in top)

    # Fine-tuning from it: everything but the classifier (into a real step-0 state: restore's
    # is abstract).
    run = construct.assemble(run.config, run.class_names, steps_per_epoch=1)
    tuned = construct.init_from(workdir, run.state)
    expected = {**variables["params"], "classifier": run.state.params["classifier"]}
    jax.tree_util.tree_map(np.testing.assert_array_equal, dict(tuned.params), expected)
    jax.tree_util.tree_map(np.testing.assert_array_equal, tuned.batch_stats,
                           variables["batch_stats"])

    with pytest.raises(FileExistsError, match="not empty"):
        write_workdir(path, workdir, config)


def test_default_config_by_classes():
    config = default_config(174, "large", "rubiks3d_aq")
    assert (config.data.name, config.model.tier, config.model.variant) == (
        "rubiks_ssv2", "large", "rubiks3d_aq")
    assert default_config(174, "tiny", "rubiks3d").model.variant == "rubiks3d"
    assert default_config(400, "small", "rubiks3d").data.name == "rubiks_kinetics400"
    with pytest.raises(ValueError, match="no default config for 9 classes"):
        default_config(9, "tiny", "rubiks3d")


def test_a_published_something_something_checkpoint_needs_no_config(tmp_path):
    path, _ = _official_file(tmp_path, "small", "rubiks3d", 2, _clip(2, 16, 16))  # 174 classes
    workdir = str(tmp_path / "ssv2_small")
    write_workdir(path, workdir)
    config = construct.load_config(workdir)
    assert (config.data.name, config.model.tier, config.model.variant, config.data.num_frames,
            config.data.flip) == ("rubiks_ssv2", "small", "rubiks3d", 2, "swap_pairs")
    assert not os.path.exists(os.path.join(workdir, construct.CLASSES_FILE))  # no data set here
    mngr = checkpointing.manager(workdir, read_only=True)
    saved, data_step = checkpointing.restore(mngr, checkpointing.find_step(mngr, "best"), None)
    _, variables = from_official(path)
    assert data_step == 0 and not saved["temperature"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, saved["params"], variables["params"])
