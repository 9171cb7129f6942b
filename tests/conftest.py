"""Session hooks of the test suite: the `gpu` marker and the RUBIKS_REQUIRE_GPU guard.

Tests marked `gpu` skip themselves where there is no GPU, which is right on a CPU machine and wrong
on the GPU machine that is meant to run them: there a skip would turn a broken CUDA set-up into a
green run. `RUBIKS_REQUIRE_GPU=1` (scripts/gpu_check.sh test sets it) makes that impossible:
- the session stops before any test runs, with a non-zero exit status, unless jax lists a GPU
  device and the CUDA kernels are built (rubiks_jax.ops.cuda_built());
- a `gpu` test that skips (a skipif mark, pytest.skip() in the test or in a fixture) is reported
  as failed, with the skip's reason. xfail marks keep their meaning.
Without the variable (or with 0) nothing changes.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_GPU = "RUBIKS_REQUIRE_GPU"
GPU_MARKER = "gpu: needs an NVIDIA GPU and jax's CUDA plugin (skipped otherwise)"


def gpu_required() -> bool:
    return os.environ.get(REQUIRE_GPU, "").strip().lower() in ("1", "true", "yes")


def gpu_problem() -> str | None:
    """Why this process cannot run the GPU tests, or None when it can.

    Imports jax and the kernels lazily, so runs without RUBIKS_REQUIRE_GPU pay nothing for it.
    """
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError as err:  # jax raises when no backend of that platform is present
        return f"no GPU: jax lists no GPU device ({err}); jax.devices(): {jax.devices()}"
    if not gpus:
        return f"no GPU: jax lists no GPU device; jax.devices(): {jax.devices()}"
    from rubiks_jax.ops import cuda_built

    if not cuda_built():
        return ("the CUDA kernels are not built (rubiks_jax.ops.cuda_built() is False): run "
                "`bash scripts/gpu_check.sh build` (or `RUBIKS_JAX_CUDA=1 python setup.py "
                "build_ext --inplace`) first")
    return None


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers the marker; registering it here too keeps --strict-markers working
    # where this file is loaded without that configuration (tests/test_gpu_guard.py does so).
    if not any(m.split(":")[0].strip() == "gpu" for m in config.getini("markers")):
        config.addinivalue_line("markers", GPU_MARKER)


def pytest_sessionstart(session: pytest.Session) -> None:
    if gpu_required():
        problem = gpu_problem()
        if problem is not None:
            pytest.exit(f"{REQUIRE_GPU}=1 but {problem}", returncode=pytest.ExitCode.TESTS_FAILED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if (gpu_required() and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is not None):
        # longrepr of a skip is (file, line, reason); anything else is shown as it is.
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_GPU}=1: a GPU test must not skip (skip reason: {reason})"
