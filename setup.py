"""pip build of rubiks-jax: the CPU kernels always, the CUDA kernels when nvcc is found.

The kernels compile against the XLA FFI headers of the jaxlib present at build time. A handler built
against newer headers may not load in an older jaxlib (older headers in a newer jaxlib are fine), so
the build records the jaxlib it compiled against and holds every installation to it:
  - rubiks_jax/_build_info_<python tag>.py gets BUILT_AGAINST_JAXLIB (and the FFI API version of
    the headers); rubiks_shift refuses impl="ffi" (and impl=None) under an older running jaxlib,
    naming both versions and the rebuild command;
  - the wheel's dependencies say jaxlib>=<that version> (and jax likewise), so pip installs a
    jaxlib the kernels can run with.
Build against the jaxlib you will run with:
  pip install -e . --no-build-isolation              (scripts/setup.sh: the venv's own jaxlib)
  python -m build --no-isolation  /  pip wheel . --no-build-isolation --no-deps
With build isolation (plain `python -m build` or `pip wheel .`) the build environment gets the
newest jax allowed by pyproject.toml's [build-system] requires, and the wheel then requires that
jaxlib or newer.

Environment:
  RUBIKS_JAX_CUDA=0|1          force the CUDA extension off / on (default: on when nvcc is found)
  RUBIKS_JAX_CUDA_ARCHS="80;90" SM architectures to compile for; PTX of the last is embedded too
  CUDA_HOME / CUDA_PATH        CUDA toolkit root (default: nvcc on PATH, asked for its directories)
"""

import glob
import importlib.util
import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# -ffp-contract=off: no FMA contraction, so the host kernels round like the CUDA kernels
# (nvcc -fmad=false) and the two give the same bits.
CXX_FLAGS = ["-std=c++20", "-O3", "-ffp-contract=off", "-fvisibility=hidden", "-Wall",
             "-Wno-unknown-pragmas"]
# -fmad=false: every float operation rounds on its own, as on the host (see CXX_FLAGS).
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-fmad=false"]
CUDA_SOURCES = ["xla_ops/rubiks_shift_cuda.cu"]
HEADERS = sorted(glob.glob("xla_ops/*.h"))  # rebuild when the shared kernel headers change
PACKAGE = "rubiks_jax"
# One record per interpreter ABI, like the extension modules it describes: two editable installs of
# one checkout (.venv and .venv-py312, each with its own jaxlib) must not overwrite each other's.
BUILD_INFO = f"_build_info_{sys.implementation.cache_tag.replace('-', '_')}.py"
# Runtime requirements; jax and jaxlib get their lower bound from the jaxlib the kernels compile
# against (_jax_requirements). Extras stay in pyproject.toml.
JAX_RANGE_MAX = "0.13"
DEPENDENCIES = ["numpy>=1.26", "flax>=0.10", "optax>=0.2.4"]


def _system_includes() -> list[str]:
    """-isystem flags for jaxlib's FFI headers (of this environment: they must match the runtime
    that loads the handlers) and pybind11, so their own warnings stay out of our build log."""
    import jax
    import pybind11

    return ["-isystem", jax.ffi.include_dir(), "-isystem", pybind11.get_include()]


def _build_jax() -> tuple[str, str, str]:
    """(jax version, jaxlib version, XLA FFI API 'major.minor') of this build environment."""
    import jax
    import jaxlib

    api = {}
    header = os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")
    if os.path.exists(header):
        with open(header) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "#define" and parts[1] in (
                        "XLA_FFI_API_MAJOR", "XLA_FFI_API_MINOR"):
                    api[parts[1]] = parts[2]
    ffi_api = f"{api.get('XLA_FFI_API_MAJOR', '?')}.{api.get('XLA_FFI_API_MINOR', '?')}"
    return jax.__version__, jaxlib.__version__, ffi_api


def _jax_requirements() -> list[str]:
    """jax/jaxlib at least as new as the jaxlib the kernels compile against (see the docstring)."""
    try:
        jax_version, jaxlib_version, _ = _build_jax()
    except ImportError:  # metadata-only steps (egg_info of an sdist) may run without jax
        jax_version = jaxlib_version = "0.10.2"
    base = lambda v: v.split("+")[0].split(".dev")[0]  # noqa: E731  (local/dev tags off)
    return [f"jax>={base(jax_version)},<{JAX_RANGE_MAX}",
            f"jaxlib>={base(jaxlib_version)},<{JAX_RANGE_MAX}"]


def _build_info_text() -> str:
    jax_version, jaxlib_version, ffi_api = _build_jax()
    return (f'"""Written by setup.py when the kernels were compiled; not in version control."""\n\n'
            f"BUILT_AGAINST_JAX = {jax_version!r}\n"
            f"BUILT_AGAINST_JAXLIB = {jaxlib_version!r}\n"
            f"BUILT_AGAINST_FFI_API = {ffi_api!r}  # XLA_FFI_API_MAJOR.MINOR of the headers\n")


def _load_toolkit():
    """xla_ops/toolkit.py, where the CUDA toolkit is (shared with the Bazel build and the tools)."""
    spec = importlib.util.spec_from_file_location(
        "rubiks_toolkit", os.path.join(os.path.dirname(os.path.abspath(__file__)), "xla_ops",
                                       "toolkit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toolkit = _load_toolkit()


def _want_cuda() -> str | None:
    flag = os.environ.get("RUBIKS_JAX_CUDA", "").strip()
    nvcc = toolkit.find_nvcc()
    if flag == "0":
        return None
    if flag == "1" and nvcc is None:
        raise RuntimeError("RUBIKS_JAX_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
    return nvcc


def _cuda_archs() -> list[str]:
    archs = os.environ.get("RUBIKS_JAX_CUDA_ARCHS", "80;90")
    out = [a.strip().removeprefix("sm_") for a in archs.replace(",", ";").split(";") if a.strip()]
    if not out or not all(a.isdigit() for a in out):
        raise RuntimeError(f"RUBIKS_JAX_CUDA_ARCHS must list SM numbers like '80;90', got {archs!r}")
    return out


class BuildPy(build_py):
    """Drops what an older build left in build/lib that this one does not install (a `train`
    package, extension modules no longer built), so `pip wheel .` in a used tree ships only what
    this build made."""

    def run(self) -> None:
        super().run()
        keep = {p.split(".")[0] for p in self.packages}
        if os.path.isdir(self.build_lib) and not getattr(self, "editable_mode", False):
            for entry in os.listdir(self.build_lib):
                path = os.path.join(self.build_lib, entry)
                if os.path.isdir(path) and entry not in keep:
                    shutil.rmtree(path)


class BuildExt(build_ext):
    """Compiles the .cu sources with nvcc and links them, with static cudart, into the CUDA module;
    writes rubiks_jax/_build_info_<python tag>.py (the jaxlib the kernels compiled against) next to
    them."""

    def run(self) -> None:
        in_source = self.inplace or getattr(self, "editable_mode", False)
        if not in_source:  # an extension built before but not now must not reach the wheel
            built = {e.name for e in self.extensions}
            pkg_dir = os.path.join(self.build_lib, PACKAGE)
            for path in glob.glob(os.path.join(pkg_dir, "_rubiks_shift_*")):
                if f"{PACKAGE}.{os.path.basename(path).split('.')[0]}" not in built:
                    os.remove(path)
        target = PACKAGE if in_source else os.path.join(self.build_lib, PACKAGE)
        record, text = os.path.join(target, BUILD_INFO), _build_info_text()
        old = open(record).read() if os.path.exists(record) else None
        if old != text:  # another jaxlib than last time: up-to-date objects are stale all the same
            self.force = True
        super().run()
        os.makedirs(target, exist_ok=True)
        with open(record, "w") as f:
            f.write(text)

    def build_extension(self, ext: Extension) -> None:
        ext.include_dirs = ["xla_ops"] + list(ext.include_dirs)
        ext.extra_compile_args = list(ext.extra_compile_args) + _system_includes()
        if getattr(ext, "cuda_sources", None):
            ext.extra_objects = list(ext.extra_objects) + self._compile_cuda(ext)
        super().build_extension(ext)

    def _compile_cuda(self, ext: Extension) -> list[str]:
        nvcc = toolkit.find_nvcc()
        gencode = []
        archs = _cuda_archs()
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
        objects = []
        os.makedirs(self.build_temp, exist_ok=True)
        for src in ext.cuda_sources:
            obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, *NVCC_FLAGS,
                   "-Xcompiler", "-fPIC,-fvisibility=hidden", *gencode]
            cmd += [f"-I{d}" for d in ext.include_dirs] + _system_includes()
            print(" ".join(cmd), flush=True)
            subprocess.check_call(cmd)
            objects.append(obj)
        return objects


def _host_extension(name: str, sources: list[str]) -> Extension:
    return Extension(name, sources=sources, extra_compile_args=CXX_FLAGS, depends=HEADERS,
                     language="c++")


def _extensions() -> list[Extension]:
    exts = [
        _host_extension("rubiks_jax._rubiks_shift_cpu",
                        ["xla_ops/rubiks_shift_cpu.cc", "xla_ops/cpu_module.cc"]),
        # The CUDA kernels' thread bodies run on the host, for the tests (needs no CUDA toolkit).
        _host_extension("rubiks_jax._rubiks_shift_cuda_emulation",
                        ["xla_ops/cuda_emulation.cc", "xla_ops/cuda_emulation_module.cc"]),
    ]
    nvcc = _want_cuda()
    if nvcc is not None:
        found = toolkit.toolkit(nvcc)
        include_dirs, lib_dirs = found.includes, found.libs
        ext = Extension(
            "rubiks_jax._rubiks_shift_cuda",
            sources=["xla_ops/cuda_module.cc"],
            include_dirs=include_dirs,
            library_dirs=lib_dirs,
            libraries=["cudart_static", "dl", "rt", "pthread"],
            extra_compile_args=CXX_FLAGS,
            depends=HEADERS,
            language="c++",
        )
        ext.cuda_sources = CUDA_SOURCES
        exts.append(ext)
    return exts


setup(
    # train/ is not installed (no top-level `train` in site-packages): its CLIs run from the
    # repository as `python -m train.main` etc.
    packages=find_packages(include=["rubiks_jax", "rubiks_jax.*"]),
    ext_modules=_extensions(),
    install_requires=_jax_requirements() + DEPENDENCIES,
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
