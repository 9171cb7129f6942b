"""Checks a run makes before it reads data: config values (the error names the key), and a resume's
config against the run's (refused, listed, or accepted with its history kept)."""

import glob
import json
import os

import pytest

from tests.train.synthetic_runs import small_config
from train import construct


@pytest.mark.parametrize("key, value, devices, message", [
    ("eval_batch_size", 6, 4, "config.eval_batch_size=6: must divide evenly over 1 processes x 4"),
    ("optim.batch_size", 10, 4, "config.optim.batch_size=10: must divide evenly"),
    ("data.crop_size", 48, 1, "config.data.resize_short=32: must be at least data.crop_size=48"),
    ("data.num_frames", 0, 1, "config.data.num_frames=0: must be positive"),
    ("model.tier", "huge", 1, "config.model: tier must be one of"),
    ("model.dtype", "float64", 1, "config.model.dtype='float64'"),
    ("optim.kind", "lamb", 1, "config.optim.kind='lamb'"),
    ("optim.decay_epochs", (0,), 1, "config.optim / config.temperature: decay_epochs"),
    ("data.flip_pairs", "0-1-2", 1, "config.data.flip_pairs"),
    ("init_from", "/nonexistent/run", 1, "config.init_from='/nonexistent/run': is not a training"),
    ("max_bad_steps", -1, 1, "config.max_bad_steps=-1"),
    ("parallelism", "pjit", 1, "config.parallelism='pjit': must be one of ('pmap', 'jit')"),
])
def test_a_bad_config_value_is_named_before_any_data_is_read(key, value, devices, message):
    config = small_config("/nonexistent/data")  # never read: the checks need no data
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(construct.ConfigError) as err:
        construct.check_config(config, process_count=1, local_devices=devices)
    assert message in str(err.value)


def test_the_small_config_passes_on_one_two_and_four_devices():
    for devices in (1, 2, 4):
        construct.check_config(small_config("/nonexistent/data"), 1, devices)


def test_a_resume_refuses_another_model_and_lists_other_changes(tmp_path):
    workdir = str(tmp_path)
    first = small_config("/data")
    construct.record_config(first, workdir, step=None)

    other_model = small_config("/data")
    other_model.model.tier = "small"
    other_model.data.num_frames = 8
    with pytest.raises(construct.ConfigChangeError) as err:
        construct.record_config(other_model, workdir, allow_change=True, step=4)
    assert "model.tier: 'tiny' -> 'small'" in str(err.value)
    assert "data.num_frames: 4 -> 8" in str(err.value)

    changed = small_config("/data", seed=3)
    changed.optim.base_lr = 0.01
    with pytest.raises(construct.ConfigChangeError) as err:
        construct.record_config(changed, workdir, step=4)
    assert "optim.base_lr: 0.002 -> 0.01" in str(err.value) and "seed: 0 -> 3" in str(err.value)
    assert "--allow_config_change" in str(err.value)
    assert construct.load_config(workdir).seed == 0  # nothing written yet
    assert not os.path.exists(os.path.join(workdir, construct.CONFIG_HISTORY))

    construct.record_config(changed, workdir, allow_change=True, step=4)
    assert construct.load_config(workdir).seed == 3
    (kept,) = glob.glob(os.path.join(workdir, construct.CONFIG_HISTORY, "until_step4_*.json"))
    assert json.load(open(kept))["seed"] == 0


def test_run_control_keys_change_freely_on_resume(tmp_path):
    workdir = str(tmp_path)
    construct.record_config(small_config("/data"), workdir, step=None)
    moved = small_config("/moved/data", max_train_steps=100, progress_bar=True,
                         eval_batch_size=16)
    construct.record_config(moved, workdir, step=4)  # no allow_change needed
    assert construct.load_config(workdir).data.data_dir == "/moved/data"
    construct.record_config(moved, workdir, step=6)  # identical: nothing kept twice
    assert len(os.listdir(os.path.join(workdir, construct.CONFIG_HISTORY))) == 1


def test_overrides_apply_to_a_saved_config_with_its_types(tmp_path):
    construct.save_config(small_config("/old/place"), str(tmp_path))
    saved = construct.load_config(str(tmp_path))  # through JSON: tuples come back as lists
    config = construct.apply_overrides(saved, [
        "--config.data.data_dir=/new/place", "--config.eval_batch_size=6",
        "--config.optim.base_lr=0.5", "--config.progress_bar=true",
        "--config.optim.decay_epochs=(3, 4)", "--config.data.flip_pairs=0-1"])
    assert (config.data.data_dir, config.eval_batch_size, config.optim.base_lr,
            config.progress_bar, list(config.optim.decay_epochs), config.data.flip_pairs) == (
        "/new/place", 6, 0.5, True, [3, 4], "0-1")
    assert saved.data.data_dir == "/old/place"  # a copy
    assert construct.apply_overrides(saved, ["--config.optim.decay_epochs=7"]).optim.decay_epochs \
        == [7]
    for arg, message in [
            ("--config.data.dat_dir=/x", "--config.data.dat_dir: no such config key (config.data "
                                         "has: crop_size, data_dir,"),
            ("--config.nope.x=1", "--config.nope.x: no such config key (config has: "
                               "checkpoint_every_steps, data,"),
            ("--config.seed.x=1", "--config.seed.x: config.seed is a value, not a group"),
            ("--config.data=1", "--config.data: config.data is a group"),
            ("--config.eval_batch_size=six", "--config.eval_batch_size=six: expected int like 8"),
            ("--config.progress_bar=maybe", "expected bool"),
            ("--config.seed", "a config override is --config.KEY=VALUE")]:
        with pytest.raises(construct.ConfigError) as err:
            construct.apply_overrides(saved, [arg])
        assert message in str(err.value), arg


def test_class_names_are_kept_and_never_change(tmp_path):
    workdir = str(tmp_path)
    construct.save_class_names(["a", "b"], workdir)
    construct.save_class_names(["a", "b"], workdir)  # a resume: the same names
    assert construct.load_class_names(workdir, small_config("/nonexistent/data")) == ["a", "b"]
    with pytest.raises(construct.DataError, match="the run's 2 classes differ from the data set's "
                                                   r"2 \(first difference at index 1\)"):
        construct.save_class_names(["a", "c"], workdir)
    with pytest.raises(FileNotFoundError, match="classes.json not found, and the run's data set"):
        construct.load_class_names(str(tmp_path / "old_run"), small_config("/nonexistent/data"))


@pytest.mark.parametrize("k, batch, devices, ok", [(1, 8, 1, True), (4, 8, 1, True),
                                                    (4, 8, 2, True), (4, 8, 4, False),
                                                    (3, 8, 1, False), (0, 8, 1, False)])
def test_accumulate_steps_must_divide_the_per_device_batch(k, batch, devices, ok):
    config = small_config("/nonexistent/data")
    config.optim.accumulate_steps = k
    config.optim.batch_size = batch
    if ok:
        construct.check_config(config, process_count=1, local_devices=devices)
        return
    with pytest.raises(construct.ConfigError, match=f"config.optim.accumulate_steps={k}: must "
                                                    "divide the per-device batch"):
        construct.check_config(config, process_count=1, local_devices=devices)


def test_tfds_video_dtype_deprecation_is_dropped_other_warnings_show(caplog):
    from absl import logging

    with caplog.at_level("WARNING"):
        # As TFDS's Video feature logs it while writing a data set's metadata.
        logging.warning("`FeatureConnector.dtype` is deprecated. Please change your code to use "
                        "NumPy with the field `FeatureConnector.np_dtype` or use TensorFlow with "
                        "the field `FeatureConnector.tf_dtype`.")
        logging.warning("`TensorInfo.dtype` is deprecated. Please change your code.")
    assert [r.getMessage() for r in caplog.records] == [
        "`TensorInfo.dtype` is deprecated. Please change your code."]
