"""The RUBIKS_REQUIRE_GPU guard of tests/conftest.py, checked on any machine.

Each case runs pytest in a subprocess on a small generated test file with tests/conftest.py loaded
as a plugin (`-p tests.conftest`); a generated conftest.py beside the file stands in for the GPU
check, so the skip-to-failure rule is exercised on a machine without a GPU too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tests.conftest as guard

REPO = Path(__file__).resolve().parents[1]

GENERATED_TESTS = """
import pytest


@pytest.mark.gpu
@pytest.mark.skipif(True, reason="pretend: no GPU")
def test_gpu_skipif():
    pass


@pytest.mark.gpu
def test_gpu_skips_inside():
    pytest.skip("pretend: too little GPU memory")


@pytest.mark.gpu
def test_gpu_passes():
    pass


@pytest.mark.gpu
@pytest.mark.xfail(reason="known failure", strict=True)
def test_gpu_xfail():
    assert False


@pytest.mark.skip(reason="not a GPU test")
def test_cpu_skip():
    pass
"""


def _env(require: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != guard.REQUIRE_GPU}
    if require is not None:
        env[guard.REQUIRE_GPU] = require
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _run(args: list[str], require: str | None) -> tuple[int, str, dict[str, int]]:
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
                         cwd=REPO, env=_env(require), capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    counts = {kind: int(n) for n, kind in
              re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)\b", text)}
    return out.returncode, text, counts


def _pytest(tmp_path: Path, require: str | None,
            gpu_check: str | None) -> tuple[int, str, dict[str, int]]:
    """Runs pytest on the generated tests with tests/conftest.py as a plugin; gpu_check replaces
    conftest.gpu_problem: None keeps the real check, else a Python expression for its value."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # pins the rootdir: no repository config
    (tmp_path / "test_generated.py").write_text(GENERATED_TESTS)
    if gpu_check is not None:
        (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
            import tests.conftest as guard
            guard.gpu_problem = lambda: {gpu_check}
            """))
    return _run(["-p", "tests.conftest", "--rootdir", str(tmp_path),
                 str(tmp_path / "test_generated.py")], require)


def test_plain_run_skips_gpu_tests(tmp_path):
    rc, text, counts = _pytest(tmp_path, require=None, gpu_check=None)
    assert rc == 0, text
    assert counts == {"passed": 1, "skipped": 3, "xfailed": 1}, text


def test_zero_means_off(tmp_path):
    rc, text, counts = _pytest(tmp_path, require="0", gpu_check="'pretend: no GPU'")
    assert rc == 0, text
    assert counts == {"passed": 1, "skipped": 3, "xfailed": 1}, text


def test_required_gpu_turns_gpu_skips_into_failures(tmp_path):
    rc, text, counts = _pytest(tmp_path, require="1", gpu_check="None")
    assert rc == 1, text
    # The skipif mark acts in setup (an error), pytest.skip() in the call (a failure); the passing
    # and the xfail GPU tests and the skip of the unmarked test are unchanged.
    assert counts == {"failed": 1, "error": 1, "passed": 1, "skipped": 1, "xfailed": 1}, text
    assert "a GPU test must not skip (skip reason: pretend: no GPU)" in text
    assert "a GPU test must not skip (skip reason: pretend: too little GPU memory)" in text


def test_required_gpu_stops_the_session_without_gpu(tmp_path):
    rc, text, counts = _pytest(tmp_path, require="1", gpu_check="'no GPU: pretend'")
    assert rc != 0, text
    assert "RUBIKS_REQUIRE_GPU=1 but no GPU: pretend" in text
    assert not counts.get("passed"), text


def _has_gpu() -> bool:
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_real_check_says_no_gpu():
    problem = guard.gpu_problem()
    assert problem is not None and problem.startswith("no GPU"), problem


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_real_gpu_tests_fail_when_required_without_gpu():
    target = str(REPO / "tests" / "ops" / "test_rubiks_shift_gpu.py")
    rc, text, counts = _run([target], require="1")
    assert rc != 0, text
    assert "RUBIKS_REQUIRE_GPU=1 but no GPU" in text
    rc, text, counts = _run([target], require=None)
    assert rc == 0 and counts.get("skipped", 0) > 0 and not counts.get("passed"), text
