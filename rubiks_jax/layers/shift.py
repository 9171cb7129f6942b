"""Shift layers: the learnable RubiksShift, the budget-constrained temporal AttentionShift, and
TSM's fixed temporal shift (its pattern also initialises RubiksShift with shift_init="tsm").

All act on channels-last (N, T, H, W, C) features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.ops import integer_shift, rubiks_shift
from rubiks_jax.ops.geometry import round_half_up

AXES = {"thw": (0, 1, 2), "hw": (1, 2)}
TEMPERATURE_COLLECTION = "temperature"  # AttentionShift's temperature: state the trainer sets


def uniform_shift_init(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """Shifts U(-1, 1) per channel and axis."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def tsm_offsets(channels: int, fold_div: int = 8) -> jax.Array:
    """TSM's temporal shift pattern dt (C,) int32: the first C/fold_div channels +1 (they read frame
    t+1), the next C/fold_div -1 (frame t-1), the rest 0."""
    k = channels // fold_div
    return jnp.zeros((channels,), jnp.int32).at[:k].set(1).at[k:2 * k].set(-1)


def tsm_shift_init(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """TSM-like temporal init: dt = tsm_offsets (C/8 channels +1, C/8 -1), the rest (and dh, dw) 0.

    Expects the temporal axis first (axes "thw")."""
    del key
    return jnp.zeros(shape, dtype).at[:, 0].set(tsm_offsets(shape[0]).astype(dtype))


SHIFT_INITS = {"uniform": uniform_shift_init, "tsm": tsm_shift_init}


class RubiksShift(nn.Module):
    """Per-channel learnable 3D shift; parameter `shift` of shape (C, number of learnable axes).

    Attributes:
      axes: "thw" (learn dt, dh, dw) or "hw" (dt held at 0).
      stride: (t, h, w) output stride.
      quantize: integer shift forward, straight-through gradient backward.
      integer: deployment form: round the shift and run the zero-FLOP integer path (no gradient
        to the shift).
      shift_init: "uniform" (U(-1, 1)), "tsm", or an initialiser (key, shape, dtype) -> array.
      impl: rubiks_shift implementation ("ffi", "xla" or None for the default).
    """

    axes: str = "thw"
    stride: Sequence[int] = (1, 1, 1)
    quantize: bool = False
    integer: bool = False
    shift_init: str | Callable = "uniform"
    impl: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.axes not in AXES:
            raise ValueError(f"axes must be 'thw' or 'hw', got {self.axes!r}")
        init = SHIFT_INITS.get(self.shift_init, self.shift_init) if isinstance(
            self.shift_init, str) else self.shift_init
        if isinstance(init, str):
            raise ValueError(f"shift_init must be one of {sorted(SHIFT_INITS)} or a callable, "
                             f"got {self.shift_init!r}")
        if init is tsm_shift_init and self.axes != "thw":
            raise ValueError("shift_init='tsm' initialises the temporal shift: it needs axes='thw'")
        c = x.shape[-1]
        learned = self.param("shift", init, (c, len(self.axes)), jnp.float32)
        shift = jnp.zeros((c, 3), jnp.float32).at[:, AXES[self.axes]].set(learned)
        if self.integer:
            return integer_shift(x, round_half_up(shift).astype(jnp.int32), stride=self.stride)
        return rubiks_shift(x, shift, stride=self.stride, quantize=self.quantize, impl=self.impl)


def attention_weights(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """softmax(w / (std(w) + 1e-6) / tau) over the shifts (-1, 0, +1); logits (C, 3) -> (C, 3).

    std is the unbiased sample deviation over the 3 logits (ddof 1), as `torch.std` in the
    published network: the biased one would sharpen the attention by sqrt(3/2)."""
    scaled = logits / (jnp.std(logits, axis=-1, keepdims=True, ddof=1) + 1e-6)
    return jax.nn.softmax(scaled / temperature, axis=-1)


def hard_temporal_shift(logits: jax.Array) -> jax.Array:
    """Integer dt in {-1, 0, +1} per channel (float32) chosen by the attention's argmax."""
    return (jnp.argmax(logits, axis=-1) - 1).astype(jnp.float32)


def _temporal_integer_shift(x: jax.Array, dt: jax.Array) -> jax.Array:
    shift = jnp.zeros((x.shape[-1], 3), jnp.int32).at[:, 0].set(dt.astype(jnp.int32))
    return integer_shift(x, shift)


def tsm_temporal_shift(x: jax.Array, fold_div: int = 8) -> jax.Array:
    """TSM's fixed, zero-FLOP shift of (..., T, H, W, C): C/fold_div channels take frame t+1, the
    next C/fold_div frame t-1 (zeros at the ends), the rest stay."""
    return _temporal_integer_shift(x, tsm_offsets(x.shape[-1], fold_div))


def shifted_fraction(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """Expected fraction of channels that shift in time: mean_c (1 - a_c1), a_c1 the weight of 0."""
    return jnp.mean(1.0 - attention_weights(logits, temperature)[:, 1])


class AttentionShift(nn.Module):
    """Temporal attention over the integer shifts (-1, 0, +1) per channel (RubiksNet-AQ).

    y[t] = a_c0 x[t-1] + a_c1 x[t] + a_c2 x[t+1], zero padded in time, with attention
    a_c = softmax(w_c / (std(w_c) + 1e-6) / tau), std unbiased. Parameter `attention` (C, 3) ~ U[0, 1); the
    temperature tau (2.0 at init) lives in the "temperature" collection, set by the trainer and
    saved with the model. `hard=True` takes the argmax: an integer temporal shift through the
    zero-FLOP path. `deployed=True` is the inference form: the parameter is then
    `temporal_shift` (C,), the integer dt per channel (see rubiks_jax.models.deploy).
    """

    initial_temperature: float = 2.0
    hard: bool = False
    deployed: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if self.deployed:
            dt = self.param("temporal_shift", nn.initializers.zeros, (c,), jnp.float32)
            return _temporal_integer_shift(x, dt)
        logits = self.param("attention", nn.initializers.uniform(1.0), (c, 3), jnp.float32)
        temperature = self.variable(TEMPERATURE_COLLECTION, "temperature",
                                    lambda: jnp.asarray(self.initial_temperature, jnp.float32))
        if self.hard:
            return _temporal_integer_shift(x, hard_temporal_shift(logits))
        a = attention_weights(logits, temperature.value).astype(x.dtype)
        t_axis = x.ndim - 4
        pad = [(0, 0)] * x.ndim
        pad[t_axis] = (1, 1)
        xp = jnp.pad(x, pad)
        t = x.shape[t_axis]
        prev = jax.lax.slice_in_dim(xp, 0, t, axis=t_axis)
        nxt = jax.lax.slice_in_dim(xp, 2, t + 2, axis=t_axis)
        return a[:, 0] * prev + a[:, 1] * x + a[:, 2] * nxt
