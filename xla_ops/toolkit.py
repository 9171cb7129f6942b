"""Where the CUDA toolkit is, found one way for every build and tool: setup.py (pip),
bazel/discover_env.py (Bazel), tools/sass.py and tools/gpu_check.py.

Standard library only, loaded by file path (it runs before anything is installed). As a script it
prints the nvcc it finds (exit 1 if none): `python3 xla_ops/toolkit.py`.

nvcc: $CUDA_HOME/bin, then $CUDA_PATH/bin, then PATH. Its include, library and bin folders are what
nvcc itself reports (`nvcc --dryrun`), so wrapper scripts and the targets/<arch>/ layout need no
guessing; CUDA_HOME / CUDA_PATH add their include and lib folders.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import NamedTuple


def find_nvcc() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return shutil.which("nvcc")


class Toolkit(NamedTuple):
    includes: list[str]  # existing folders, real paths
    libs: list[str]      # existing folders, real paths, no stubs
    bin: str | None      # the toolkit's bin folder (nvcc's TOP/bin)


def toolkit(nvcc: str) -> Toolkit:
    """The folders of the toolkit behind `nvcc`."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True,
                         text=True).stderr
    includes, libs, bin_dir = [], [], None
    for line in out.splitlines():
        if line.startswith("#$ TOP="):
            bin_dir = os.path.normpath(os.path.join(line.split("=", 1)[1].strip(), "bin"))
        for token in shlex.split(line.removeprefix("#$ ").split("=", 1)[-1]):
            if line.startswith("#$ INCLUDES=") and token.startswith("-I"):
                includes.append(token[2:])
            elif line.startswith("#$ LIBRARIES=") and token.startswith("-L") and "stubs" not in token:
                libs.append(token[2:])
    root = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if root:
        includes.append(os.path.join(root, "include"))
        libs += [os.path.join(root, "lib64"), os.path.join(root, "lib")]
    existing = lambda ds: [os.path.realpath(d) for d in ds if os.path.isdir(d)]  # noqa: E731
    return Toolkit(existing(includes), existing(libs), bin_dir)


if __name__ == "__main__":
    nvcc = find_nvcc()
    if nvcc is None:
        sys.exit("nvcc not found (set CUDA_HOME or PATH)")
    print(nvcc)
