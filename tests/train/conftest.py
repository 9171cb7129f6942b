"""Runs shared by the tests of train/: the synthetic data set (prepared once) and one finished
small run, each made once per test run (shared by the xdist workers)."""

import json

import pytest

from tests.conftest import run_once
from tests.train.synthetic_runs import small_config
from train import construct, trainer


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The small synthetic data set, prepared (tests and CLI subprocesses only read it)."""
    with run_once(tmp_path_factory, "tfds") as (path, done):
        if not done:
            from rubiks_jax.data import pipeline
            pipeline.get_builder(construct.data_config(small_config(str(path))))
    return str(path)


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory):
    """(workdir, final evaluation) of the uninterrupted small run: 8 steps, 2 epochs. Tests copy
    the workdir before they change it."""
    with run_once(tmp_path_factory, "trained") as (path, done):
        workdir, report = path / "run", path / "final_evaluation.json"
        if not done:
            report.write_text(json.dumps(trainer.train_and_evaluate(small_config(data_dir),
                                                                    str(workdir))))
    return str(workdir), json.loads(report.read_text())
