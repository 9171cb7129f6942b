"""config.parallelism: pmap and jit (one Mesh, jit(shard_map(step))) train the same run from one
seed on 4 host devices, and each resumes the other's checkpoints (tests/train/parallel_runs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train.synthetic_runs import ROOT


@pytest.mark.slow
def test_pmap_and_jit_train_alike_and_resume_each_other(data_dir, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "tests.train.parallel_runs", data_dir,
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # The same per-device program, collectives and data: bit-identical on this VM; a compiler
    # that fuses the two programs differently may round differently, hence the tolerance.
    jit_first, pmap_first = report["jit_then_pmap_losses"], report["pmap_then_jit_losses"]
    assert len(jit_first) == len(pmap_first) == 4
    np.testing.assert_allclose(jit_first, pmap_first, rtol=1e-5)
    assert report["step2_difference"] <= 1e-5, report  # jit alone against pmap alone
    assert report["step4_difference"] <= 1e-5, report  # each resumed from the other mode

@pytest.mark.slow
def test_the_parallelism_benchmark_runs_on_two_devices(tmp_path):
    out_json = tmp_path / "parallel.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "train.bench_parallel", "--repeats=1",
                          "--op_shape=2,3,5,6,8", "--config.optim.batch_size=4",
                          "--config.data.crop_size=16", "--config.data.num_frames=4",
                          f"--json={out_json}"], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out_json.read_text())
    assert result["devices"] == 2
    variants = [(r["kind"], r["variant"]) for r in result["rows"]]
    assert variants == [("step", "pmap"), ("step", "jit"), ("op", "jit sharded"),
                        ("op", "shard_map"), ("op", "one device, one block")]
    assert all(r["median_s"] > 0 for r in result["rows"])
