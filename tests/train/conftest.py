"""Runs shared by the tests of train/: the synthetic data set (prepared once) and one finished
small run, made once per session."""

import pytest

from tests.train.synthetic_runs import small_config
from train import trainer


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory):
    """(workdir, final evaluation) of the uninterrupted small run: 8 steps, 2 epochs."""
    workdir = str(tmp_path_factory.mktemp("run"))
    result = trainer.train_and_evaluate(small_config(data_dir), workdir)
    return workdir, result
