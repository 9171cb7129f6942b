"""Checkpoints: Orbax ranks evaluated checkpoints by top-1 across restarts; which step a name
means; a checkpoint that does not restore intact is set aside; room for two checkpoints."""

import glob
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
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


def test_a_non_finite_or_unreadable_checkpoint_is_set_aside_for_the_one_before(tmp_path):
    mngr = checkpointing.manager(str(tmp_path))
    checkpointing.save(mngr, 2, _state(2), data_step=2)
    checkpointing.save(mngr, 4, _state(4), data_step=4)
    checkpointing.save(mngr, 6, _state(float("nan")), data_step=6)
    checkpointing.wait(mngr)
    with pytest.raises(checkpointing.CheckpointError, match="checkpoints/6: w has values"):
        checkpointing.restore(mngr, 6, _state(0))
    os.remove(os.path.join(tmp_path, "checkpoints", "4", "meta", "metadata"))  # unreadable
    logged = []
    state, data_step, step = checkpointing.restore_latest_intact(mngr, _state(0), str(tmp_path),
                                                                 log=logged.append)
    assert (step, data_step) == (2, 2) and state["w"][0] == 2
    assert sorted(os.listdir(os.path.join(tmp_path, checkpointing.QUARANTINE))) == ["4", "6"]
    assert "checkpoint 6 cannot be restored" in logged[0] and "not finite" in logged[0]
    assert mngr.all_steps() == [2]
    mngr.close()


@pytest.mark.parametrize("garbage", [b"\xff" * 4096, b"\x55" * 16, b"\x01"])
@pytest.mark.parametrize("where", [0.25, 0.5, 0.75])
def test_bytes_changed_on_disk_never_restore_silently(tmp_path, garbage, where):
    """The arrays are zstd-compressed: changed bytes often decode to finite values (a NaN check
    alone let about half of these through); the saved checksums catch every one."""
    mngr = checkpointing.manager(str(tmp_path))
    state = {"w": np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32),
             "b": np.ones((1000,), np.float32)}
    checkpointing.save(mngr, 1, state, data_step=1)
    checkpointing.wait(mngr)
    data = max(glob.glob(os.path.join(tmp_path, "checkpoints", "1", "state", "**", "d", "*"),
                         recursive=True), key=os.path.getsize)
    with open(data, "r+b") as f:
        f.seek(int(os.path.getsize(data) * where))
        f.write(garbage)
    # zstd notices some changes itself (a read error); the rest must fail the checksum
    with pytest.raises((checkpointing.CheckpointError, ValueError),
                       match="w differs from what was saved|ZSTD|not finite"):
        checkpointing.restore(mngr, 1, None)
    mngr.close()


def test_checkpoints_without_checksums_still_restore(tmp_path):
    """Checkpoints written before checksums existed carry only data_step."""
    mngr = checkpointing.manager(str(tmp_path))
    mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(3)),
                                         meta=ocp.args.JsonSave({"data_step": 3})))
    checkpointing.wait(mngr)
    state, data_step = checkpointing.restore(mngr, 3, _state(0))
    assert data_step == 3 and state["w"][0] == 3
    mngr.close()


def test_another_model_is_named_and_not_set_aside(tmp_path):
    mngr = checkpointing.manager(str(tmp_path))
    checkpointing.save(mngr, 2, _state(2), data_step=2)
    checkpointing.wait(mngr)
    other = {"w": np.zeros((3,), np.float32), "b": np.zeros((), np.int32)}
    with pytest.raises(checkpointing.LayoutMismatch,
                       match=r"checkpoints/2 holds another model .* \(1 arrays saved, 2 expected; "
                             r"saved only: float32\[2\]; expected only: int32\[\], float32\[3\]\)"):
        checkpointing.restore_latest_intact(mngr, other, str(tmp_path))
    assert mngr.all_steps() == [2]  # nothing moved aside
    assert not os.path.exists(os.path.join(tmp_path, checkpointing.QUARANTINE))
    mngr.close()


def test_free_space_for_two_checkpoints_is_checked(tmp_path, monkeypatch):
    state = {"w": np.zeros((1024, 1024), np.float32)}  # 4 MiB
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=6 * 2**20))
    with pytest.raises(checkpointing.CheckpointError, match="6.0 MiB free, but 2 checkpoints of "
                                                            "this run need 8.0 MiB"):
        checkpointing.check_free_space(str(tmp_path), state)
    checkpointing.check_free_space(str(tmp_path), state, copies=1)


def test_saves_between_evaluations_and_read_only_opens_log_no_warning_others_show(tmp_path, caplog):
    from absl import logging

    mngr = checkpointing.manager(str(tmp_path))
    with caplog.at_level("WARNING"):
        checkpointing.save(mngr, 1, _state(1), data_step=1)  # no metrics: between evaluations
        checkpointing.wait(mngr)
        checkpointing.manager(str(tmp_path), read_only=True)  # as inference opens a run
        logging.warning("another orbax warning")
    messages = [r.getMessage() for r in caplog.records]
    assert "another orbax warning" in messages
    assert messages == ["another orbax warning"], messages
