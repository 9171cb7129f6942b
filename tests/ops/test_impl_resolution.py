"""impl=None picks the implementation that can run: the pure-XLA path (with one warning) on a GPU
whose CUDA kernels were not built, and a jaxlib older than the one the kernels were compiled
against is refused with both versions named. Monkeypatched, so it runs on the CPU."""

from __future__ import annotations

import importlib
import re
import warnings

import jax
import jax.numpy as jnp
import pytest

from rubiks_jax.ops import ffi_kernels
# The module (rubiks_jax.ops re-exports the function under the same name).
rs = importlib.import_module("rubiks_jax.ops.rubiks_shift")

X = jnp.zeros((1, 2, 3, 4, 5))
S = jnp.zeros((5, 3))
needs_kernels = pytest.mark.skipif(not ffi_kernels.available(),
                                   reason="compiled kernels not installed")


@pytest.fixture
def fresh_caches():
    rs._warn_no_cuda_kernels.cache_clear()
    rs._jaxlib_mismatch.cache_clear()
    yield
    rs._warn_no_cuda_kernels.cache_clear()
    rs._jaxlib_mismatch.cache_clear()


@pytest.fixture
def gpu_without_cuda_kernels(monkeypatch, fresh_caches):
    monkeypatch.setattr(ffi_kernels, "available", lambda: True)
    monkeypatch.setattr(ffi_kernels, "cuda_built", lambda: False)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")


def test_gpu_without_cuda_kernels_falls_back_to_xla_and_warns_once(gpu_without_cuda_kernels):
    with pytest.warns(RuntimeWarning, match=r"CUDA kernels .* not built.*impl='xla'"):
        assert rs._resolve_impl(None) == "xla"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rs._resolve_impl(None) == "xla"  # no second warning
        assert rs._resolve_impl("xla") == "xla"


def test_gpu_without_cuda_kernels_op_runs(gpu_without_cuda_kernels):
    # Only the resolution is patched: the computation itself runs on the CPU through the XLA path.
    with pytest.warns(RuntimeWarning):
        assert rs.rubiks_shift(X, S).shape == X.shape


def test_gpu_with_cuda_kernels_uses_ffi(monkeypatch, fresh_caches):
    monkeypatch.setattr(ffi_kernels, "available", lambda: True)
    monkeypatch.setattr(ffi_kernels, "cuda_built", lambda: True)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rs._resolve_impl(None) == "ffi"


@needs_kernels
def test_cpu_uses_ffi_without_warning(monkeypatch, fresh_caches):
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(ffi_kernels, "cuda_built", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rs._resolve_impl(None) == "ffi"


@pytest.mark.parametrize("impl", [None, "ffi"])
def test_kernels_built_against_a_newer_jaxlib_are_refused(monkeypatch, fresh_caches, impl):
    import jaxlib

    monkeypatch.setattr(ffi_kernels, "available", lambda: True)
    monkeypatch.setattr(rs, "built_against_jaxlib", lambda: "99.1.0")
    running = re.escape(jaxlib.__version__)
    with pytest.raises(RuntimeError, match=rf"compiled against jaxlib 99\.1\.0, but jaxlib "
                                           rf"{running} is running.*--no-build-isolation"):
        rs._resolve_impl(impl)
    assert rs._resolve_impl("xla") == "xla"
    assert rs._resolve_impl("reference") == "reference"  # pure JAX: no kernels involved


@pytest.mark.parametrize("built", ["0.0.1", None])
def test_kernels_built_against_an_older_or_unknown_jaxlib_are_accepted(monkeypatch, fresh_caches,
                                                                      built):
    monkeypatch.setattr(ffi_kernels, "available", lambda: True)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(rs, "built_against_jaxlib", lambda: built)
    assert rs._resolve_impl("ffi") == "ffi"
    assert rs._resolve_impl(None) == "ffi"


@needs_kernels
def test_build_info_matches_the_running_jaxlib():
    """setup.py recorded the jaxlib of this build; scripts/setup.sh builds against this venv's."""
    import jaxlib

    built = rs.built_against_jaxlib()
    if built is None:
        pytest.skip("kernels built without setup.py's record (rubiks_jax/_build_info_*.py)")
    assert rs._version_tuple(built) <= rs._version_tuple(jaxlib.__version__)


def test_build_info_of_a_kernels_dir(monkeypatch, tmp_path):
    """Kernels from RUBIKS_JAX_KERNELS_DIR are judged by that directory's record."""
    monkeypatch.setattr(ffi_kernels, "kernels_dir", lambda: str(tmp_path), raising=False)
    assert rs.built_against_jaxlib() is None
    (tmp_path / f"{rs.BUILD_INFO}.py").write_text("BUILT_AGAINST_JAXLIB = '0.11.1'\n")
    assert rs.built_against_jaxlib() == "0.11.1"
