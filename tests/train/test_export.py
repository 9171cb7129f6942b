"""Exported inference artifacts of a trained run: the jax.export function and the TensorFlow
SavedModel reload and give the model's logits at any batch size; impl="xla" is portable (no
custom call), impl="ffi" carries our kernels."""

import json
import os
import re

import jax
import numpy as np
import pytest

from tests.conftest import run_once
from train import export, inference


def _custom_calls(module_text: str) -> set[str]:
    """Targets of the custom calls in an exported module (jax's own `shape_assertion` checks the
    symbolic batch size when the function is called)."""
    return set(re.findall(r"custom_call @(\w+)", module_text)) - {"shape_assertion"}


def _expected(workdir: str, video: np.ndarray) -> np.ndarray:
    run, state, _ = inference.restore(workdir, "latest")
    return np.asarray(run.model.apply(state.variables(), video, train=False))


def _video(info: dict, batch: int) -> np.ndarray:
    shape = [batch] + info["input_shape"][1:]
    return np.random.default_rng(batch).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """(workdir, description) of the trained run's impl="xla" artifacts, made once per test run."""
    workdir, _ = trained
    with run_once(tmp_path_factory, "exported") as (path, done):
        description = path / "description.json"
        if not done:
            description.write_text(json.dumps(export.export(workdir, str(path / "out"), "latest",
                                                            "xla")))
    return workdir, json.loads(description.read_text())


def test_jax_artifact_reloads_and_matches_at_any_batch(exported):
    workdir, info = exported
    with open(os.path.join(info["out"], export.JAX_FILE), "rb") as f:
        restored = jax.export.deserialize(f.read())
    assert _custom_calls(restored.mlir_module()) == set()  # portable: plain StableHLO
    for batch in (1, 3):
        video = _video(info, batch)
        np.testing.assert_allclose(np.asarray(restored.call(video)), _expected(workdir, video),
                                   rtol=1e-5, atol=1e-5)
    saved = json.load(open(os.path.join(info["out"], export.INFO_FILE)))
    assert saved["impl"] == "xla" and saved["input_shape"][0] == "B" and saved["class_names"]


def test_saved_model_reloads_and_matches(exported):
    import tensorflow as tf

    workdir, info = exported
    loaded = tf.saved_model.load(os.path.join(info["out"], export.SAVED_MODEL_DIR))
    serve = loaded.signatures["serving_default"]
    for batch in (2, 5):
        video = _video(info, batch)
        logits = serve(video=tf.constant(video))["logits"].numpy()
        np.testing.assert_allclose(logits, _expected(workdir, video), rtol=1e-4, atol=1e-4)


def test_ffi_artifact_carries_the_kernels(trained, tmp_path):
    from rubiks_jax.ops import ffi_available
    if not ffi_available():
        pytest.skip("compiled kernels not installed")
    workdir, _ = trained
    info = export.export(workdir, str(tmp_path), "latest", "ffi")
    assert "saved_model" not in info
    with open(os.path.join(info["out"], export.JAX_FILE), "rb") as f:
        restored = jax.export.deserialize(f.read())
    assert "rubiks_shift_forward" in _custom_calls(restored.mlir_module())
    video = _video(info, 2)
    np.testing.assert_allclose(np.asarray(restored.call(video)), _expected(workdir, video),
                               rtol=1e-5, atol=1e-5)


def test_cli_writes_the_artifacts(trained, tmp_path):
    import subprocess
    import sys

    from tests.train.synthetic_runs import ROOT

    workdir, _ = trained
    out = subprocess.run([sys.executable, "-m", "train.export", f"--workdir={workdir}",
                          "--step=latest", f"--out={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.path.isfile(tmp_path / export.JAX_FILE)
    assert os.path.isdir(tmp_path / export.SAVED_MODEL_DIR)
