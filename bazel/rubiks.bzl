"""Macros of xla_ops/BUILD: the Python extension modules, with the flags of setup.py."""

load("@python_env//:defs.bzl", "CUDA_ARCHS", "EXT_SUFFIX", "NVCC")

# setup.py CXX_FLAGS. -ffp-contract=off: no FMA contraction, so the host kernels round like the
# CUDA kernels (nvcc -fmad=false) and the two give the same bits.
CXX_FLAGS = ["-std=c++20", "-O3", "-ffp-contract=off", "-fvisibility=hidden", "-Wall",
             "-Wno-unknown-pragmas"]

# setup.py NVCC_FLAGS (+ the -Xcompiler flags it adds).
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-fmad=false",
              "-Xcompiler", "-fPIC,-fvisibility=hidden"]

def extension_name(module):
    """File name of a Python extension module for the environment's interpreter."""
    return module + EXT_SUFFIX

def python_extension(name, module, srcs, deps = [], linkopts = [], **kwargs):
    """A pybind11 extension module `module` (file module + EXT_SUFFIX); `name` is an alias of it."""
    native.cc_binary(
        name = extension_name(module),
        srcs = srcs,
        copts = CXX_FLAGS,
        linkshared = True,
        linkopts = linkopts,
        deps = deps + ["@python_env//:pybind11", "@python_env//:xla_ffi"],
        **kwargs
    )
    native.alias(name = name, actual = ":" + extension_name(module))

def have_cuda():
    return NVCC != None

def _gencode():
    out = []
    for a in CUDA_ARCHS:
        out += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
    last = CUDA_ARCHS[-1]
    return out + ["-gencode", "arch=compute_%s,code=compute_%s" % (last, last)]

def cuda_python_extension(name, module, cuda_srcs, srcs, hdrs, deps = []):
    """The CUDA extension module, as setup.py builds it: `cuda_srcs` compiled by nvcc with
    NVCC_FLAGS and -gencode for each of CUDA_ARCHS (PTX of the last one embedded too), linked with
    `srcs` and libcudart_static. Defines nothing when the environment has no nvcc."""
    if not have_cuda():
        return
    flags = NVCC_FLAGS + _gencode() + [
        "-Ixla_ops",
        "-isystem external/python_env/jax_ffi_include",
    ]
    objects = []
    for src in cuda_srcs:
        obj = name + "_" + src.split("/")[-1].replace(".", "_")
        native.genrule(
            name = obj,
            srcs = [src] + hdrs + ["@python_env//:xla_ffi_headers"],
            # .pic.o: cc_binary(linkshared) links the PIC objects.
            outs = [obj + ".pic.o"],
            cmd = "%s -c $(location %s) -o $@ %s" % (NVCC, src, " ".join(flags)),
            message = "nvcc " + src,
        )
        objects.append(":" + obj)
    python_extension(
        name = name,
        module = module,
        srcs = srcs + objects,
        deps = deps + ["@python_env//:cuda_headers", "@python_env//:cudart_static"],
        linkopts = ["-ldl", "-lrt", "-lpthread"],
    )
