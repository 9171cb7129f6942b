"""The sdist and the wheel work outside the source tree.

`python -m build --no-isolation` (RUBIKS_JAX_CUDA=0 to keep it short) builds the sdist from this
checkout and the wheel from that sdist, so a file missing from the sdist fails the wheel build. The
wheel then goes into a fresh venv and runs the op there, from a directory outside the repository.

--no-isolation: the kernels compile against this venv's jaxlib, the one the fresh venv runs with
(an isolated build would download the newest jax in pyproject.toml's range, about 600 MB, and the
wheel would then require that jaxlib). The fresh venv sees this venv's site-packages through a .pth
line (jax, flax, ... without downloading them again); .pth files inside that directory are not
processed, so the editable install of the checkout stays invisible and rubiks_jax can only come
from the wheel (asserted).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile

import pytest

from tests.conftest import run_once

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, **kwargs):
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, (f"{cmd} failed ({out.returncode}):\n{out.stdout[-4000:]}\n"
                                 f"{out.stderr[-4000:]}")
    return out


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def dists(tmp_path_factory):
    """(sdist, wheel), built once per test run (shared by the workers)."""
    pytest.importorskip("build", reason="needs the `build` package (requirements.txt installs it)")
    with run_once(tmp_path_factory, "dist") as (out, done):
        if not done:
            _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), REPO],
                 env=_clean_env(RUBIKS_JAX_CUDA="0"), cwd=str(out))
    sdists = glob.glob(str(out / "*.tar.gz"))
    wheels = glob.glob(str(out / "*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return sdists[0], wheels[0]


def test_sdist_has_every_kernel_source(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {os.path.relpath(p, REPO) for ext in ("h", "cc", "cu")
              for p in glob.glob(os.path.join(REPO, "xla_ops", f"*.{ext}"))}
    assert any(n.endswith(".cu") for n in needed)
    assert needed <= names, f"missing from the sdist: {sorted(needed - names)}"
    for f in ("setup.py", "pyproject.toml", "README.md", "requirements.txt", "MANIFEST.in"):
        assert f in names
    assert not [n for n in names if n.endswith((".so", ".o")) or n.startswith("train/")]


def test_wheel_contents(dists):
    import jaxlib

    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = zf.read(f"rubiks_jax/_build_info_{sys.implementation.cache_tag.replace('-', '_')}"
                       ".py").decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "rubiks_jax"}, "only the rubiks_jax package belongs in site-packages (no top-level train)"
    assert any(n.startswith("rubiks_jax/_rubiks_shift_cpu.") for n in names)
    assert not any(n.startswith("rubiks_jax/_rubiks_shift_cuda.") for n in names)  # CUDA=0
    assert f"BUILT_AGAINST_JAXLIB = {jaxlib.__version__!r}" in info
    base = jaxlib.__version__.split("+")[0].split(".dev")[0]
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: jaxlib")]
    assert requires and f">={base}" in requires[0], requires


def test_wheel_runs_in_a_fresh_venv(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(site.strip(), "_rubiks_test_outer_venv.pth"), "w") as f:
        f.write("\n".join(sorted(ours)) + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
         env=_clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"))

    work = tmp_path / "elsewhere"
    work.mkdir()
    code = textwrap.dedent(f"""
        import importlib.util, os
        import jax, jax.numpy as jnp, jaxlib, numpy as np
        import rubiks_jax
        from rubiks_jax.ops import cuda_built, ffi_available, rubiks_shift
        from rubiks_jax.ops.rubiks_shift import built_against_jaxlib

        venv = os.path.realpath({str(venv)!r})
        assert os.path.realpath(rubiks_jax.__file__).startswith(venv + os.sep), rubiks_jax.__file__
        assert importlib.util.find_spec("train") is None, "a top-level train package is installed"
        assert ffi_available() and not cuda_built()
        assert built_against_jaxlib() == jaxlib.__version__

        x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 5, 8))
        shift = jax.random.uniform(jax.random.PRNGKey(1), (8, 3), minval=-1.5, maxval=1.5)
        def loss(x, s, impl):
            return jnp.sum(rubiks_shift(x, s, stride=(1, 2, 1), padding=1, impl=impl) ** 2)
        results = {{}}
        for impl in ("ffi", "xla"):
            y = rubiks_shift(x, shift, stride=(1, 2, 1), padding=1, impl=impl)
            results[impl] = (y,) + jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(
                x, shift, impl)
        for a, b in zip(results["ffi"], results["xla"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        print("ok", rubiks_jax.__file__)
    """)
    out = _run([python, "-c", code], cwd=str(work), env=_clean_env())
    assert out.stdout.startswith("ok"), out.stdout

    # The same installation, as if its kernels had been compiled against a newer jaxlib than the
    # one running: impl="ffi" is refused with both versions and the rebuild command named.
    tag = sys.implementation.cache_tag.replace("-", "_")
    info = os.path.join(os.path.dirname(out.stdout.split()[1]), f"_build_info_{tag}.py")
    with open(info, "a") as f:
        f.write("BUILT_AGAINST_JAXLIB = '99.0.0'\n")
    code = textwrap.dedent("""
        import jax.numpy as jnp
        from rubiks_jax.ops import rubiks_shift
        try:
            rubiks_shift(jnp.zeros((1, 2, 3, 4, 5)), jnp.zeros((5, 3)), impl="ffi")
        except RuntimeError as err:
            print(err)
        print(rubiks_shift(jnp.zeros((1, 2, 3, 4, 5)), jnp.zeros((5, 3)), impl="xla").shape)
    """)
    out = _run([python, "-c", code], cwd=str(work), env=_clean_env())
    assert "compiled against jaxlib 99.0.0, but jaxlib" in out.stdout, out.stdout
    assert "--no-build-isolation" in out.stdout and "(1, 2, 3, 4, 5)" in out.stdout, out.stdout
