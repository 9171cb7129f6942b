"""Session hooks of the test suite: one persistent JAX compilation cache per run, the Hypothesis
profiles, results shared by the xdist workers, the `gpu` marker and the RUBIKS_REQUIRE_GPU guard.

Compilation cache: a run (pytest, or scripts/test.sh's pytest) clears `.jax_cache/` in the checkout
(ignored by git) and points JAX_COMPILATION_CACHE_DIR there before anything imports jax, so the
tests, the xdist workers and every CLI subprocess they start (they inherit the environment) compile
a given computation once. A JAX_COMPILATION_CACHE_DIR already set (by the user, or by the pytest
run that started this one) is used as it is and not cleared.

Hypothesis: the `ci` profile (the default) runs a fixed number of examples, derandomised and without
an example database, so a run never depends on an earlier one; `--hypothesis-profile=long` runs
twenty times as many, randomised.

Tests marked `gpu` skip themselves where there is no GPU, which is right on a CPU machine and wrong
on the GPU machine that is meant to run them: there a skip would turn a broken CUDA set-up into a
green run. `RUBIKS_REQUIRE_GPU=1` (tools/gpu_check.py test sets it) makes that impossible:
- the session stops before any test runs, with a non-zero exit status, unless jax lists a GPU
  device and the CUDA kernels are built (rubiks_jax.ops.cuda_built());
- a `gpu` test that skips (a skipif mark, pytest.skip() in the test or in a fixture) is reported
  as failed, with the skip's reason. xfail marks keep their meaning.
Without the variable (or with 0) nothing changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

import hypothesis
import pytest

REPO = Path(__file__).resolve().parents[1]
COMPILATION_CACHE = REPO / ".jax_cache"


def _use_one_compilation_cache() -> None:
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)
    COMPILATION_CACHE.mkdir()  # jax writes entries into it but does not create it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(COMPILATION_CACHE)
    # Every compile is worth keeping: the CLI subprocesses' small ones add up too.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


_use_one_compilation_cache()

HYPOTHESIS_EXAMPLES = 25  # the `ci` profile's examples per property
hypothesis.settings.register_profile(
    "ci", max_examples=HYPOTHESIS_EXAMPLES, derandomize=True, database=None, deadline=None,
    print_blob=True)
hypothesis.settings.register_profile(
    "long", max_examples=20 * HYPOTHESIS_EXAMPLES, deadline=None, print_blob=True)
hypothesis.settings.load_profile("ci")


@contextlib.contextmanager
def run_once(tmp_path_factory: pytest.TempPathFactory, name: str):
    """(directory, done) of a result the xdist workers share, made once: by whichever worker comes
    first, while it holds the lock (the others wait), in a directory beside the workers' own
    temporary directories. `done` is False for the caller that must make it; the directory counts
    as made once that caller's block exits without an exception."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = (path / ".done").exists()
        yield path, done
        (path / ".done").touch()

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
                "`python tools/gpu_check.py build` (or `RUBIKS_JAX_CUDA=1 python setup.py "
                "build_ext --inplace`) first")
    return None


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers the marker; registering it here too keeps --strict-markers working
    # where this file is loaded without that configuration (tests/test_gpu_guard.py does so).
    if not any(m.split(":")[0].strip() == "gpu" for m in config.getini("markers")):
        config.addinivalue_line("markers", GPU_MARKER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The slow tests first (otherwise in collection order): on xdist workers fed a few tests at a
    # time (scripts/test.sh: --maxschedchunk), the long ones start at once and the short ones fill
    # the gaps, instead of one long test running alone at the end.
    for item in items:  # a test of the trained small run needs a training run first: slow too
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
