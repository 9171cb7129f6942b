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
