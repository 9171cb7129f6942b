"""rubiks_shift under jit with shardings on 4 and 8 host devices, with Shardy and GSPMD: each check
of sharding_checks.py (batch, channels, both, T gathered with its warning, vmap, shard_map; ffi and
xla; f32 strided and bf16 quantized) reads the compiled HLO and compares with one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import run_once
from tests.ops.cases import needs_ffi
from tests.ops.sharding_checks import CHECKS

# (devices, partitioner flag): jax's default partitioner (Shardy) on 4 and 8 devices, GSPMD on 4.
CONFIGS = {"4-default": (4, []), "8-default": (8, []), "4-gspmd": (4, ["--gspmd"])}
IMPLS = [pytest.param("ffi", marks=needs_ffi), "xla"]


def _config_param(name: str):
    # The 4-device run also goes with every kernel build; the others are slow (a subprocess each).
    marks = pytest.mark.kernels if name == "4-default" else pytest.mark.slow
    return pytest.param(name, marks=marks)


@pytest.fixture(scope="session")
def reports(tmp_path_factory):
    """{config: the checks' report}, each config's subprocess run once per test run."""
    cache = {}

    def get(config: str) -> dict:
        if config not in cache:
            with run_once(tmp_path_factory, f"sharding-{config}") as (path, done):
                report = path / "report.json"
                if not done:
                    devices, flags = CONFIGS[config]
                    env = dict(os.environ, JAX_PLATFORMS="cpu",
                               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
                    from rubiks_jax.ops import ffi_available
                    impls = ["ffi", "xla"] if ffi_available() else ["xla"]
                    out = subprocess.run([sys.executable, "-m", "tests.ops.sharding_checks", *flags,
                                          *impls], env=env, capture_output=True, text=True,
                                         timeout=600, cwd=os.path.dirname(os.path.dirname(
                                             os.path.dirname(os.path.abspath(__file__)))))
                    assert out.returncode == 0, out.stderr[-3000:]
                    report.write_text(out.stdout.strip().splitlines()[-1])
                cache[config] = json.loads(report.read_text())
        return cache[config]

    return get


@pytest.mark.parametrize("config", [_config_param(c) for c in CONFIGS])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("check", CHECKS)
def test_sharded_call(reports, config, impl, check):
    report = reports(config)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    assert report[f"{impl}-{check}"] == "ok", report[f"{impl}-{check}"]
