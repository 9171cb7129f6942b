"""Checkpoints: Orbax ranks evaluated checkpoints by top-1 across restarts; which step a name
means."""

import numpy as np
import pytest

from train import checkpointing


def _state(value: float) -> dict:
    return {"w": np.full((2,), value, np.float32)}


def test_the_best_checkpoint_survives_a_restart(tmp_path):
    mngr = checkpointing.manager(str(tmp_path), keep_latest=1, keep_best=1)
    checkpointing.save(mngr, 1, _state(1), data_step=1, metrics={"top1": 0.9})
    checkpointing.save(mngr, 2, _state(2), data_step=2)
    mngr.wait_until_finished()
    mngr.close()
    mngr = checkpointing.manager(str(tmp_path), keep_latest=1, keep_best=1)  # the restart
    checkpointing.save(mngr, 3, _state(3), data_step=3, metrics={"top1": 0.5})
    checkpointing.save(mngr, 4, _state(4), data_step=4)
    mngr.wait_until_finished()
    assert sorted(mngr.all_steps()) == [1, 4]  # 1: the best; 4: the latest
    assert checkpointing.find_step(mngr, "best") == 1
    assert checkpointing.find_step(mngr, "latest") == 4
    state, data_step = checkpointing.restore(mngr, 1, _state(0))
    np.testing.assert_array_equal(state["w"], [1, 1])
    assert data_step == 1
    mngr.close()


def test_find_step(tmp_path):
    mngr = checkpointing.manager(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        checkpointing.find_step(mngr, "best")
    checkpointing.save(mngr, 5, _state(5), data_step=5)
    mngr.wait_until_finished()
    assert checkpointing.find_step(mngr, "best") == 5  # none evaluated: the latest
    assert checkpointing.find_step(mngr, "5") == 5
    with pytest.raises(ValueError, match="no such checkpoint"):
        checkpointing.find_step(mngr, "3")
    mngr.close()
