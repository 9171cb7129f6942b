"""A short training run on a real-data builder, from video files in an official layout through
`python -m rubiks_jax.data.prepare` (the run itself never decodes a video)."""

import pytest

from rubiks_jax.data import prepare
from tests.data import videos
from tests.train.synthetic_runs import metrics_rows, small_config
from train import trainer
from train.configs import ucf101


@pytest.mark.slow
def test_training_consumes_prepared_ucf101(tmp_path):
    clips = videos.make_ucf101(tmp_path / "raw")  # 3 classes, 3 train and 3 test videos
    report = prepare.prepare("ucf101", tmp_path / "raw", tmp_path / "prepared", workers=2,
                             progress=False)
    assert report.prepared == len(clips) and not report.failed

    config = small_config(str(tmp_path / "tfds"))
    config.data.name = ucf101.get_config("prepared").data.name
    config.data.manual_dir = str(tmp_path / "prepared")
    config.data.eval_split = "test"
    config.data.flip = "always"
    config.optim.batch_size = 4
    config.eval_batch_size = 4
    config.max_train_steps = 1  # compiling the steps is most of the time
    result = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["num_examples"] == 3  # every test video, once
    assert 0.0 <= result["top1"] <= 1.0
    assert any("loss" in row for row in metrics_rows(str(tmp_path / "run")))


def test_ucf101_config_picks_the_source():
    assert ucf101.get_config().data.name == "ucf101/ucf101_1"  # TFDS's own
    prepared = ucf101.get_config("prepared")
    assert prepared.data.name == "rubiks_ucf101/split1" and prepared.data.eval_split == "test"
    with pytest.raises(ValueError, match="ucf101.py:prepared"):
        ucf101.get_config("split2")
