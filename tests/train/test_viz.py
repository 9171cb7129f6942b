"""python -m train.viz on training workdirs: the small trained run (its checkpoint's shifts and its
initialisation in the summary), an AQ workdir (the budget figure) and the errors it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from rubiks_jax import viz as viz_lib
from rubiks_jax.models import budget_stats
from tests.train.synthetic_runs import ROOT, small_config
from train import checkpointing, construct, inference
from train import viz

FIGURES = ["change.png", "histograms.png", "shifts_3d.png", "summary.json", "temporal_fraction.png"]


def test_cli_draws_the_trained_run(trained, tmp_path):
    workdir, _ = trained
    out = tmp_path / "figs"
    proc = subprocess.run([sys.executable, "-m", "train.viz", f"--workdir={workdir}",
                           f"--out={out}", "--step=latest"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout[proc.stdout.index("["):])
    assert sorted(os.path.basename(p) for p in printed) == FIGURES
    assert all(os.path.getsize(p) > 2000 for p in printed)

    run, state, step = inference.restore(workdir, "latest")
    data = json.load(open(out / "summary.json"))
    assert data["step"] == step == 8 and data["variant"] == "rubiks3d" and "aq" not in data
    # The checkpoint's shifts, and the initialisation beside them; 8 steps moved the shifts.
    learned = viz_lib.stage_stats(viz_lib.collect_shifts(jax.device_get(state.variables())))
    initial = construct.assemble(run.config, run.class_names, steps_per_epoch=1).state
    init = viz_lib.stage_stats(viz_lib.collect_shifts(jax.device_get(initial.variables())))
    assert data["stages"]["all"] == pytest.approx(learned["all"])
    assert data["reference"]["stages"]["all"] == pytest.approx(init["all"])
    assert data["stages"]["all"]["mean_abs_dh"] != pytest.approx(init["all"]["mean_abs_dh"],
                                                                 abs=1e-7)
    assert [r["path"] for r in data["layers"]][:2] == ["layer0_block0/shift", "layer1_block0/shift"]
    assert data["change"]["all"]["mean_abs_change_dh"] > 0


def _aq_workdir(data_dir: str, workdir: str, temperature: float) -> dict:
    """A workdir as train.convert writes one (config.json, a step-0 checkpoint) of the small
    config as RubiksNet-AQ, its attention logits and temperature set to known values; returns the
    variables saved."""
    config = small_config(data_dir)
    config.model.variant = "rubiks3d_aq"
    config.model.budget = 0.2
    run = construct.build(config)
    rng = np.random.default_rng(0)
    params = {p: (rng.normal(size=v.shape).astype(np.float32) if p.endswith("/attention") else v)
              for p, v in flatten_dict(jax.device_get(run.state.params), sep="/").items()}
    temps = jax.tree_util.tree_map(lambda t: np.full_like(t, temperature),
                                   jax.device_get(run.state.temperature))
    state = run.state.replace(params=unflatten_dict(params, sep="/"), temperature=temps)
    mngr = checkpointing.manager(workdir)
    checkpointing.save(mngr, 0, state, data_step=0)
    mngr.wait_until_finished()
    mngr.close()
    construct.save_config(config, workdir)
    return state.variables()


@pytest.mark.slow
def test_aq_run_gets_the_budget_figure(data_dir, tmp_path):
    workdir = str(tmp_path / "aq")
    variables = _aq_workdir(data_dir, workdir, temperature=0.3)
    paths = viz.visualize(workdir, str(tmp_path / "out"), "latest")
    assert sorted(os.path.basename(p) for p in paths) == sorted(FIGURES + ["budget.png"])
    data = json.load(open(tmp_path / "out" / "summary.json"))
    assert data["budget"] == 0.2 and data["variant"] == "rubiks3d_aq"
    expected = budget_stats(variables)
    assert set(data["aq"]) == set(expected)
    for path, f in data["aq"].items():
        assert f["expected"] == pytest.approx(float(expected[path]), rel=1e-6)
        assert f["temperature"] == pytest.approx(0.3)
    # The reference is the initialisation: temperature 2, logits U[0, 1).
    assert all(f["temperature"] == pytest.approx(2.0) for f in data["reference"]["aq"].values())


def test_errors_name_the_problem(trained, tmp_path):
    workdir, _ = trained
    with pytest.raises(FileNotFoundError, match="config.json"):
        viz.visualize(str(tmp_path), str(tmp_path / "out"))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        viz.visualize(workdir, str(not_a_dir))
    with pytest.raises(NotADirectoryError, match="not a directory"):
        viz.visualize(workdir, str(not_a_dir / "sub"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(open(os.path.join(workdir, "config.json")).read())
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        viz.visualize(str(empty), str(tmp_path / "out"))


def test_read_only_out_is_an_error(tmp_path, monkeypatch):
    # The check runs before the workdir is read. Permissions are faked: root writes anywhere.
    monkeypatch.setattr(viz.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="is not writable"):
        viz.visualize(str(tmp_path), str(tmp_path / "out"))

    def refuse(path, exist_ok=False):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(viz.os, "makedirs", refuse)
    with pytest.raises(PermissionError, match="cannot create the directory"):
        viz.visualize(str(tmp_path), str(tmp_path / "new"))


def test_cli_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "train.viz", f"--workdir={tmp_path}",
                           f"--out={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "train.viz:" in proc.stderr and "config.json not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_the_cli_defines_no_flags():
    code = ("import train.export, train.convert, train.viz\n"
            "from absl import flags\n"
            "print('out' in flags.FLAGS)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
