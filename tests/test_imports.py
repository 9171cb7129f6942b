"""The op, layers, models, FLOP counting, optimizer, benchmarks, the checkpoint converter and the
shift figures must import without TensorFlow (GPU machines may lack it): only rubiks_jax.data and
train/ may need it. PyTorch is imported only when rubiks_jax.convert reads a checkpoint."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["rubiks_jax", "rubiks_jax.ops", "rubiks_jax.layers", "rubiks_jax.models",
           "rubiks_jax.models.tsm", "rubiks_jax.layers.baselines", "rubiks_jax.flops",
           "rubiks_jax.optim", "rubiks_jax.demo", "rubiks_jax.bench.__main__",
           "rubiks_jax.bench.plots", "rubiks_jax.convert", "rubiks_jax.viz"]


def test_core_modules_import_without_tensorflow():
    code = ("import importlib, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "heavy = sorted(k for k in sys.modules if k.split('.')[0] in "
            "('tensorflow', 'tensorflow_datasets', 'ml_collections', 'torch'))\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
