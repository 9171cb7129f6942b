"""RUBIKS_JAX_KERNELS_DIR: the compiled modules come from that directory (the Bazel build's
bazel_out/kernels/, scripts/bazel_build.sh) instead of the package, and only from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rubiks_jax.ops import ffi_kernels

pytestmark = pytest.mark.kernels

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import os, sys
from rubiks_jax.ops import ffi_kernels
import jax, jax.numpy as jnp
from rubiks_jax.ops import rubiks_shift
print(",".join(ffi_kernels._registered_modules()))
print(os.path.dirname(sys.modules["rubiks_jax._rubiks_shift_cpu"].__file__))
x = jnp.arange(2 * 3 * 4 * 5 * 2, dtype=jnp.float32).reshape(2, 3, 4, 5, 2)
s = jnp.array([[0.0, 1.0, 0.0], [0.5, -0.25, 1.5]], jnp.float32)
y_ffi = rubiks_shift(x, s, impl="ffi")
y_xla = rubiks_shift(x, s, impl="xla")
print(float(jnp.max(jnp.abs(y_ffi - y_xla))))
"""


def _probe(kernels: Path) -> list[str]:
    env = dict(os.environ, RUBIKS_JAX_KERNELS_DIR=str(kernels), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_unset_means_the_package(monkeypatch):
    monkeypatch.delenv(ffi_kernels.KERNELS_DIR, raising=False)
    assert ffi_kernels.kernels_dir() is None


def test_missing_module_is_an_import_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ffi_kernels.KERNELS_DIR, str(tmp_path))
    assert ffi_kernels.kernels_dir() == str(tmp_path)
    with pytest.raises(ImportError, match="RUBIKS_JAX_KERNELS_DIR"):
        ffi_kernels.kernel_module("_rubiks_shift_cpu")


@pytest.mark.skipif(not ffi_kernels.available(), reason="CPU kernels not built")
def test_modules_load_from_the_directory_only(tmp_path):
    """A directory with only the CPU module: that copy is loaded and registered, the package's
    emulation (and CUDA) modules are not, and impl="ffi" runs on it."""
    built = Path(ffi_kernels.kernel_module("_rubiks_shift_cpu").__file__)
    shutil.copy(built, tmp_path / built.name)
    modules, directory, max_diff = _probe(tmp_path)
    assert modules == "_rubiks_shift_cpu"
    assert Path(directory) == tmp_path
    assert float(max_diff) < 1e-5
