"""xla_ops/toolkit.py: where the CUDA toolkit is, for setup.py, the Bazel build and the tools.

A fake nvcc (a shell script printing what `nvcc --dryrun` prints) stands in for the toolkit."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "xla_ops", "toolkit.py")


@pytest.fixture()
def toolkit():
    spec = importlib.util.spec_from_file_location("rubiks_toolkit_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_nvcc(root: str) -> str:
    """ROOT/bin/nvcc answering --dryrun like a toolkit installed in ROOT/targets/x86_64-linux."""
    target = os.path.join(root, "targets", "x86_64-linux")
    for d in ("bin", "targets/x86_64-linux/include", "targets/x86_64-linux/lib/stubs"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    nvcc = os.path.join(root, "bin", "nvcc")
    with open(nvcc, "w") as f:
        f.write("#!/bin/sh\n"
                f"echo '#$ TOP={root}/bin/..' >&2\n"
                f"echo '#$ INCLUDES=\"-I{target}/include\" \"-I{root}/missing\"' >&2\n"
                f"echo '#$ LIBRARIES=  \"-L{target}/lib/stubs\" \"-L{target}/lib\"' >&2\n")
    os.chmod(nvcc, os.stat(nvcc).st_mode | stat.S_IXUSR)
    return nvcc


def test_cuda_home_comes_first_and_dryrun_gives_the_folders(toolkit, tmp_path, monkeypatch):
    root = str(tmp_path / "cuda")
    nvcc = _fake_nvcc(root)
    monkeypatch.setenv("CUDA_HOME", root)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert toolkit.find_nvcc() == nvcc
    found = toolkit.toolkit(nvcc)
    target = os.path.realpath(os.path.join(root, "targets", "x86_64-linux"))
    # missing folders dropped, stubs never linked, CUDA_HOME's include added where it exists
    assert found.includes == [os.path.join(target, "include")]
    assert found.libs == [os.path.join(target, "lib")]
    assert found.bin == os.path.join(root, "bin")


def test_path_is_searched_without_cuda_home(toolkit, tmp_path, monkeypatch):
    nvcc = _fake_nvcc(str(tmp_path / "cuda"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", os.path.dirname(nvcc))
    assert toolkit.find_nvcc() == nvcc
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert toolkit.find_nvcc() is None


def test_as_a_script_it_prints_nvcc_or_fails(tmp_path):
    nvcc = _fake_nvcc(str(tmp_path / "cuda"))
    env = {"PATH": "/usr/bin:/bin", "CUDA_PATH": str(tmp_path / "cuda")}
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == nvcc
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "nvcc not found" in out.stderr
