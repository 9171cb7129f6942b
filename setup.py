"""pip build of rubiks-jax: the CPU kernels always, the CUDA kernels when nvcc is found.

Install with `pip install -e . --no-build-isolation` so the kernels compile against the FFI headers
of the jaxlib already in the environment (a handler built against newer headers will not load in an
older jaxlib).

Environment:
  RUBIKS_JAX_CUDA=0|1          force the CUDA extension off / on (default: on when nvcc is found)
  RUBIKS_JAX_CUDA_ARCHS="80;90" SM architectures to compile for; PTX of the last is embedded too
  CUDA_HOME / CUDA_PATH        CUDA toolkit root (default: nvcc on PATH, asked for its directories)
"""

import glob
import os
import shlex
import shutil
import subprocess

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off: no FMA contraction, so the host kernels round like the CUDA kernels
# (nvcc -fmad=false) and the two give the same bits.
CXX_FLAGS = ["-std=c++20", "-O3", "-ffp-contract=off", "-fvisibility=hidden", "-Wall",
             "-Wno-unknown-pragmas"]
# -fmad=false: every float operation rounds on its own, as on the host (see CXX_FLAGS).
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-fmad=false"]
CUDA_SOURCES = ["xla_ops/rubiks_shift_cuda.cu"]
HEADERS = sorted(glob.glob("xla_ops/*.h"))  # rebuild when the shared kernel headers change


def _system_includes() -> list[str]:
    """-isystem flags for jaxlib's FFI headers (of this environment: they must match the runtime
    that loads the handlers) and pybind11, so their own warnings stay out of our build log."""
    import jax
    import pybind11

    return ["-isystem", jax.ffi.include_dir(), "-isystem", pybind11.get_include()]


def _find_nvcc() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return shutil.which("nvcc")


def _cuda_dirs(nvcc: str) -> tuple[list[str], list[str]]:
    """Include and library directories of the toolkit behind `nvcc`, as nvcc itself reports them
    (`--dryrun`), so wrapper scripts and the targets/<arch>/ layout need no guessing."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True,
                         text=True).stderr
    includes, libs = [], []
    for line in out.splitlines():
        for token in shlex.split(line.removeprefix("#$ ").split("=", 1)[-1]):
            if line.startswith("#$ INCLUDES=") and token.startswith("-I"):
                includes.append(token[2:])
            elif line.startswith("#$ LIBRARIES=") and token.startswith("-L") and "stubs" not in token:
                libs.append(token[2:])
    root = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if root:
        includes.append(os.path.join(root, "include"))
        libs += [os.path.join(root, "lib64"), os.path.join(root, "lib")]
    return ([d for d in includes if os.path.isdir(d)], [d for d in libs if os.path.isdir(d)])


def _want_cuda() -> str | None:
    flag = os.environ.get("RUBIKS_JAX_CUDA", "").strip()
    nvcc = _find_nvcc()
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


class BuildExt(build_ext):
    """Compiles the .cu sources with nvcc and links them, with static cudart, into the CUDA module."""

    def build_extension(self, ext: Extension) -> None:
        ext.include_dirs = ["xla_ops"] + list(ext.include_dirs)
        ext.extra_compile_args = list(ext.extra_compile_args) + _system_includes()
        if getattr(ext, "cuda_sources", None):
            ext.extra_objects = list(ext.extra_objects) + self._compile_cuda(ext)
        super().build_extension(ext)

    def _compile_cuda(self, ext: Extension) -> list[str]:
        nvcc = _find_nvcc()
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
        include_dirs, lib_dirs = _cuda_dirs(nvcc)
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
    packages=find_packages(include=["rubiks_jax", "rubiks_jax.*", "train", "train.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
)
