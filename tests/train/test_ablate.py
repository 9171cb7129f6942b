"""train.ablate: the variants' configs, one short run per variant through the trainer (the frozen
shifts end where they started, the learned ones do not), resuming a finished ablation, the table."""

from __future__ import annotations

import os

import pytest

from tests.train.synthetic_runs import small_config
from train import ablate


def test_each_variant_sets_its_keys_and_the_seed():
    base = small_config("/nonexistent/data")
    frozen = ablate.variant_config(base, "frozen", 7)
    assert frozen.seed == 7 and frozen.optim.freeze_shifts and not base.optim.freeze_shifts
    tsm = ablate.variant_config(base, "tsm", 0)
    assert tsm.model.shift_init == "tsm" and tsm.optim.freeze_shifts
    assert not ablate.variant_config(base, "no_temporal", 0).model.learn_temporal_shift
    assert ablate.variant_config(base, "learned", 0).to_dict() == {**base.to_dict(), "seed": 0}
    with pytest.raises(ValueError, match="unknown variant 'fixed'"):
        ablate.variant_config(base, "fixed", 0)


@pytest.mark.slow
def test_short_runs_of_learned_and_frozen_shifts_and_the_table(data_dir, tmp_path):
    config = small_config(data_dir, max_train_steps=3)
    config.optim.num_epochs = 1
    config.optim.warmup_epochs = 0
    rows = [ablate.run_one(config, v, 0, str(tmp_path / v / "seed0")) for v in ("learned", "frozen")]
    learned, frozen = rows
    assert frozen["mean_abs_change_dt"] == 0.0 and frozen["mean_abs_change_dh"] == 0.0
    assert learned["mean_abs_change_dt"] > 0.0
    assert all(r["num_examples"] == 18 and r["wall_s"] > 0 for r in rows)
    # A finished run is read back, not trained again.
    assert ablate.run_one(config, "frozen", 0, str(tmp_path / "frozen" / "seed0")) == frozen
    assert os.path.exists(tmp_path / "frozen" / "seed0" / ablate.RUN_FILE)
    lines = ablate.table(rows).splitlines()
    assert lines[0].startswith("| variant | top-1 per seed (%)") and len(lines) == 4
    assert lines[3].startswith(f"| frozen | {100 * frozen['top1']:.1f} | ")
    assert "| 0.000 |" in lines[3]
