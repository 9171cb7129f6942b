"""Reports, as JSON on stdout, what the Bazel build needs from the active Python environment and the
CUDA toolkit: run by the repository rule in python_env.bzl with the interpreter it was given.

Mirrors setup.py: the Python headers and extension suffix (sysconfig), pybind11.get_include(),
jax.ffi.include_dir() (the FFI headers of this environment's jaxlib: handlers built against newer
headers will not load in an older jaxlib), and nvcc (honouring RUBIKS_JAX_CUDA=0|1) with its
include and library directories, found by xla_ops/toolkit.py as setup.py finds them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig


def _load_toolkit():
    """xla_ops/toolkit.py, where the CUDA toolkit is (shared with setup.py and the tools)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "xla_ops",
                        "toolkit.py")
    spec = importlib.util.spec_from_file_location("rubiks_toolkit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cuda_archs() -> list[str]:
    archs = os.environ.get("RUBIKS_JAX_CUDA_ARCHS", "80;90")
    out = [a.strip().removeprefix("sm_") for a in archs.replace(",", ";").split(";") if a.strip()]
    if not out or not all(a.isdigit() for a in out):
        sys.exit(f"RUBIKS_JAX_CUDA_ARCHS must list SM numbers like '80;90', got {archs!r}")
    return out


def main() -> None:
    import jax
    import pybind11

    env = {
        "python": sys.executable,
        "python_version": sysconfig.get_python_version(),
        "python_include": sysconfig.get_paths()["include"],
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "pybind11_include": pybind11.get_include(),
        "jax_ffi_include": jax.ffi.include_dir(),
        "jax_version": jax.__version__,
        "nvcc": None,
        "cuda_include": None,
        "cudart_static": None,
        "cuda_archs": _cuda_archs(),
    }
    flag = os.environ.get("RUBIKS_JAX_CUDA", "").strip()
    toolkit = _load_toolkit()
    nvcc = toolkit.find_nvcc()
    if flag == "1" and nvcc is None:
        sys.exit("RUBIKS_JAX_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
    if flag != "0" and nvcc is not None:
        found = toolkit.toolkit(nvcc)
        includes, libs = found.includes, found.libs
        cudart = [os.path.join(d, "libcudart_static.a") for d in libs
                  if os.path.exists(os.path.join(d, "libcudart_static.a"))]
        headers = [d for d in includes if os.path.exists(os.path.join(d, "cuda_runtime.h"))]
        if cudart and headers:
            env.update(nvcc=os.path.realpath(nvcc), cuda_include=headers[0], cudart_static=cudart[0])
        elif flag == "1":
            sys.exit(f"RUBIKS_JAX_CUDA=1 but {nvcc} has no cuda_runtime.h / libcudart_static.a "
                     f"(include dirs {includes}, library dirs {libs})")
    json.dump(env, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
