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
    reference = report["pmap_losses"]
    assert len(reference) == 4
    for name in ("jit_then_pmap", "pmap_then_jit"):
        np.testing.assert_allclose(report[f"{name}_losses"], reference, rtol=1e-5, err_msg=name)
        for step in (2, 4):
            assert report[f"{name}_step{step}_difference"] <= 1e-5, (name, step, report)

