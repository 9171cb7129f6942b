"""CUDA kernels against the float64 reference and the CPU kernels. Skips without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.ops import cuda_built, ffi_kernels, rubiks_shift
from tests.ops import reference
from tests.ops.cases import CASES, Case, make_inputs


def _gpu():
    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        return None
    return devices[0] if devices else None


GPU = _gpu()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(GPU is None or not cuda_built(),
                                 reason="needs an NVIDIA GPU, jax's CUDA plugin and the CUDA kernels")]
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 2e-3}


def _on(device, *arrays):
    return tuple(jax.device_put(jnp.asarray(a), device) for a in arrays)


def _run(device, x, shift, dy, case: Case, quantize=False):
    x, shift, dy = _on(device, x, shift, dy)
    y, vjp = jax.vjp(lambda a, s: rubiks_shift(a, s, stride=case.stride, padding=case.padding,
                                               quantize=quantize, impl="ffi"), x, shift)
    dx, dshift = vjp(dy)
    assert y.devices() == {device}
    return [np.asarray(v, np.float64) for v in (y, dx, dshift)]


def _close(actual, expected, rel):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_float64_reference(case, dtype):
    x, shift, dy = make_inputs(case, dtype)
    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    y, dx, dshift = _run(GPU, x, shift, dy, case)
    kw = dict(stride=case.stride, padding=case.padding)
    _close(y, reference.forward(x64, shift, **kw), TOL[dtype])
    _close(dx, reference.grad_input(dy64, x.shape, shift, **kw), max(TOL[dtype], 1e-5))
    _close(dshift, reference.grad_shift(x64, dy64, shift, **kw), 5e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16],
                         ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_cpu_kernels_bit_for_bit(case, quantize, dtype):
    """Both run the row functions of rubiks_shift_math.h with every float operation rounded on its
    own (nvcc -fmad=false, host -ffp-contract=off) and the same reduction order: the same bits.
    (Hardware and software bf16/f16 conversions differ only in a NaN's payload; these cases have
    no NaN.) The CPU side is the scalar kernels: the vectorised paths sum the shift gradient in
    another order (test_cpu_simd.py)."""
    x, shift, dy = make_inputs(case, dtype)
    x, shift, dy = (jnp.asarray(v) for v in (x, shift, dy))

    def run(device):
        xd, sd, dyd = _on(device, x, shift, dy)
        y, vjp = jax.vjp(lambda a, s: rubiks_shift(a, s, stride=case.stride, padding=case.padding,
                                                   quantize=quantize, impl="ffi"), xd, sd)
        return (y,) + vjp(dyd)

    ffi_kernels.set_cpu_simd(False)
    try:
        # Materialised here: dispatch is asynchronous, and the switch is read when a kernel runs.
        on_cpu = [np.asarray(v) for v in run(jax.devices("cpu")[0])]
    finally:
        ffi_kernels.set_cpu_simd(True)
    for name, g, c in zip(("y", "dx", "dshift"), run(GPU), on_cpu):
        g, c = np.asarray(g), np.asarray(c)
        bits = np.uint32 if g.dtype.itemsize == 4 else np.uint16
        differ = int(np.sum(g.view(bits) != c.view(bits)))
        assert differ == 0, f"{name}: {differ} of {g.size} elements differ from the CPU kernels"


def test_cuda_deterministic_and_bitwise_repeatable():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 56, 56, 72)).astype(np.float32)
    shift = rng.uniform(-2, 2, (72, 3)).astype(np.float32)
    case = Case(x.shape)
    first = _run(GPU, x, shift, x, case)
    for _ in range(3):
        for a, b in zip(first, _run(GPU, x, shift, x, case)):
            np.testing.assert_array_equal(a, b)


def test_cuda_under_jit_vmap_and_pmap():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 2, 4, 6, 5, 7)), jnp.float32)
    s = jnp.asarray(rng.uniform(-1.5, 1.5, (3, 7, 3)), jnp.float32)
    x, s = _on(GPU, x, s)
    loss = lambda a, b: jnp.sum(jnp.sin(rubiks_shift(a, b, stride=(1, 2, 1), impl="ffi")))
    grad = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))
    gx, gs = grad(x, s)
    for i in range(3):
        gxi, gsi = jax.grad(loss, argnums=(0, 1))(x[i], s[i])
        np.testing.assert_allclose(gx[i], gxi, atol=1e-5)
        np.testing.assert_allclose(gs[i], gsi, rtol=1e-5, atol=1e-5)
    n = jax.local_device_count()
    xs = jnp.broadcast_to(x[0], (n,) + x.shape[1:])
    ys = jax.pmap(lambda a: rubiks_shift(a, s[0], impl="ffi"))(xs)
    np.testing.assert_allclose(ys[0], rubiks_shift(x[0], s[0], impl="ffi"), atol=1e-6)


def test_cuda_large_tensor_64bit_offsets():
    """More than 2^31 elements in x: offsets must be 64-bit (needs about 20 GB of GPU memory)."""
    free = GPU.memory_stats().get("bytes_limit", 0) if hasattr(GPU, "memory_stats") else 0
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    shape = (1, 2, 1024, 1024, 1025)  # 2.15e9 elements in bf16
    x = jnp.ones(shape, jnp.bfloat16, device=GPU)
    shift = jnp.zeros((1025, 3), jnp.float32).at[:, 2].set(0.5)
    y = rubiks_shift(x, shift, impl="ffi")
    # Last channel, last row: interior points average two ones; the last column reads padding.
    last = np.asarray(y[0, 1, 1023, :, 1024], np.float32)
    np.testing.assert_array_equal(last[:-1], 1.0)
    assert last[-1] == 0.5


# ------------------------------------------------------------------------------------------------
# Inside a CUDA graph: XLA command buffers record the custom calls by stream capture, so anything a
# handler does that a graph cannot hold (a host sync, an allocation, a stream it owns) breaks here.
# XLA_FLAGS hold for a whole process, hence one subprocess per configuration.
# ------------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
CMD_BUFFER_OFF = "--xla_gpu_enable_command_buffer="
# Only custom calls may enter a command buffer here, so a command buffer in the compiled program
# proves that ours are in it; the second configuration records the fusions around them as well.
CMD_BUFFER_CUSTOM_CALL = "--xla_gpu_enable_command_buffer=CUSTOM_CALL --xla_gpu_graph_min_graph_size=1"
CMD_BUFFER_ALL = ("--xla_gpu_enable_command_buffer=FUSION,CUSTOM_CALL "
                  "--xla_gpu_graph_min_graph_size=1")
GRAPH_MODULE = "rubiks_graph_step"  # the jitted function's name: XLA dumps only its module

GRAPH_RUN = f"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax.ops import rubiks_shift

assert jax.default_backend() == "gpu", jax.devices()


def op(x, s):
    return rubiks_shift(x, s, stride=(1, 2, 1), padding=(1, 0, 2), impl="ffi")


def {GRAPH_MODULE}(x, s, dy):
    y, vjp = jax.vjp(op, x, s)
    return (y,) + vjp(dy)


step = jax.jit({GRAPH_MODULE})
out = {{}}
for dtype in (jnp.float32, jnp.bfloat16):
    # Three calls with new inputs (new buffers): the first may run outside the graph while XLA
    # records it, the later ones replay it with updated arguments.
    for i in range(3):
        rng = np.random.default_rng(i)
        x = jnp.asarray(rng.standard_normal((2, 5, 7, 9, 13)), dtype)
        s = jnp.asarray(rng.uniform(-3, 3, (13, 3)), jnp.float32)
        dy = jnp.asarray(rng.standard_normal(jax.eval_shape(op, x, s).shape), dtype)
        for name, v in zip(("y", "dx", "dshift"), step(x, s, dy)):
            out[f"{{jnp.dtype(dtype).name}}_{{i}}_{{name}}"] = np.asarray(v.astype(jnp.float32))
np.savez(sys.argv[1], **out)
"""


def _run_graph_step(tmp_path: Path, name: str, xla_flags: str) -> dict[str, np.ndarray]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # this pytest process holds most of the GPU
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    result = tmp_path / f"{name}.npz"
    proc = subprocess.run([sys.executable, "-c", GRAPH_RUN, str(result)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} ({xla_flags}) failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    with np.load(result) as data:
        return dict(data)


def _in_command_buffer(dump: Path) -> bool:
    """Whether XLA put the step into a command buffer, from its dump: the thunk sequence after the
    thunk passes (XLA converting thunks) or the optimized HLO (older XLA scheduling HLO)."""
    thunks = [p.read_text() for p in dump.glob("*thunk_sequence*.txt")]
    if thunks:
        return any("kCommandBuffer" in t for t in thunks)
    return any("command_buffer" in p.read_text() for p in dump.glob("*after_optimizations*.txt"))


def test_cuda_inside_command_buffer_matches_outside_bitwise(tmp_path):
    """Forward and both gradients under jit, recorded in a CUDA graph (XLA command buffers forced
    on for graphs of any size), against the same calls outside any graph: the same bits."""
    dump = tmp_path / "dump"
    plain = _run_graph_step(tmp_path, "plain", CMD_BUFFER_OFF)
    flags = (f"{CMD_BUFFER_CUSTOM_CALL} --xla_dump_to={dump} --xla_dump_hlo_as_text "
             f"--xla_dump_hlo_module_re={GRAPH_MODULE}")
    runs = {"custom calls in a graph": _run_graph_step(tmp_path, "custom_call", flags),
            "fusions and custom calls in a graph": _run_graph_step(tmp_path, "all", CMD_BUFFER_ALL)}
    files = sorted(p.name for p in dump.glob("*")) if dump.exists() else []
    assert _in_command_buffer(dump), (
        "XLA did not put the custom calls into a command buffer (handlers need "
        f"xla::ffi::Traits::kCmdBufferCompatible); dump files: {files[:40]}")
    assert plain.keys() == runs["custom calls in a graph"].keys() and len(plain) == 18
    for label, run in runs.items():
        for key, expected in plain.items():
            same = np.array_equal(run[key].view(np.uint32), expected.view(np.uint32))
            assert same, f"{label}: {key} differs from the run outside a graph"
