"""The optimisation recipe (docs/DESIGN.md, "Training recipe") as optax pieces.

    tx, schedules = make_optimizer(base_lr=scale_learning_rate(0.025, batch_size),
                                   steps_per_epoch=spe, warmup_epochs=..., params=params)
    opt_state = tx.init(params)
    # inside the (p)mapped step, after grads = jax.lax.pmean(grads, "batch"):
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    lr = {group: schedule(step) for group, schedule in schedules.items()}  # for logging

Parameters fall in three groups (`param_groups`): "decay" (conv and dense kernels: SGD with momentum
and coupled L2 weight decay), "no_decay" (biases, BatchNorm scales: SGD with momentum) and "shift"
(RubiksShift shifts and AttentionShift logits: per-channel normalised gradients for the RubiksShift
shifts, then SGD with momentum at 1/100 of the global rate after the warm-up, no weight decay).

Everything here is a pure function of the parameter/gradient trees, so it runs unchanged inside
jit or pmap; the cross-device mean of the gradients is the trainer's job and comes before `update`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

DECAY, NO_DECAY, SHIFT = "decay", "no_decay", "shift"
GROUPS = (DECAY, NO_DECAY, SHIFT)

# Leaf and module names the rubiks_jax models give their parameters (rubiks_jax.layers).
SHIFT_LEAF = "shift"          # RubiksShift: (C, 3) for axes "thw", (C, 2) for axes "hw"
ATTENTION_LEAF = "attention"  # AttentionShift: (C, 3) logits over the temporal shifts (-1, 0, +1)


# --------------------------------------------------------------------------------------------------
# Parameter groups


def _key_name(entry: Any) -> str:
    """The name of one entry of a jax tree path (dict key, attribute or index)."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(_key_name(e) for e in path)


def is_rubiks_shift_path(path: Sequence[Any], leaf: Any) -> bool:
    """True for a RubiksShift shift parameter: a 2-D leaf named `shift` with 2 or 3 columns.

    The rubiks_jax models name the module `shift` too (`.../shift/shift`), but only the leaf name
    is required, so a RubiksShift used under another module name (or on its own) is recognised.
    """
    shape = getattr(leaf, "shape", ())
    return (bool(path) and _key_name(path[-1]) == SHIFT_LEAF and len(shape) == 2
            and shape[-1] in (2, 3))


def is_attention_path(path: Sequence[Any], leaf: Any) -> bool:
    """True for AttentionShift logits: a (C, 3) leaf named `attention`."""
    shape = getattr(leaf, "shape", ())
    return bool(path) and _key_name(path[-1]) == ATTENTION_LEAF and len(shape) == 2 \
        and shape[-1] == 3


def _label(path: Sequence[Any], leaf: Any) -> str:
    name = _key_name(path[-1]) if path else ""
    ndim = len(getattr(leaf, "shape", ()))
    if is_rubiks_shift_path(path, leaf) or is_attention_path(path, leaf):
        return SHIFT
    if name == "kernel" and ndim >= 2:  # nn.Conv (ndim >= 3) and nn.Dense (2-D) kernels
        return DECAY
    if name in ("bias", "scale") and ndim == 1:  # conv / dense / BatchNorm biases, BatchNorm scales
        return NO_DECAY
    raise ValueError(f"param_groups: cannot classify parameter {_path_str(path) or '<root>'!r} "
                     f"of shape {tuple(getattr(leaf, 'shape', ()))}")


def param_groups(params: Any) -> Any:
    """Labels every leaf of a Flax parameter tree "decay", "no_decay" or "shift".

    "decay": conv and dense kernels (leaf `kernel`, 2-D or more); "no_decay": 1-D `bias` and
    `scale` leaves (conv/dense biases, BatchNorm scale and bias); "shift": RubiksShift `shift`
    (C, 2|3) and AttentionShift `attention` (C, 3). Works on arrays or `jax.ShapeDtypeStruct`s, with
    or without the top-level "params" key. Raises ValueError naming the path of any other leaf.
    """
    return jax.tree_util.tree_map_with_path(_label, params)


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules


def scale_learning_rate(base_lr: float, batch_size: int, reference_batch: int = 64) -> float:
    """Linear scaling rule: base_lr * batch_size / reference_batch (the recipe: 0.025 at 64)."""
    if batch_size <= 0 or reference_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got batch_size={batch_size}, "
                         f"reference_batch={reference_batch}")
    return float(base_lr) * batch_size / reference_batch


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return int(round(epochs * steps_per_epoch))


def _check(steps_per_epoch: int, warmup_epochs: float, decay_epochs: Sequence[float],
           decay_factor: float) -> tuple[int, list[int]]:
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if decay_factor < 0:
        raise ValueError(f"decay_factor must be >= 0, got {decay_factor}")
    warmup = _steps(warmup_epochs, steps_per_epoch)
    decays = [_steps(e, steps_per_epoch) for e in decay_epochs]
    if sorted(decays) != decays or len(set(decays)) != len(decays):
        raise ValueError(f"decay_epochs must be strictly increasing, got {tuple(decay_epochs)}")
    if decays and decays[0] < warmup:
        raise ValueError(f"decay_epochs {tuple(decay_epochs)} must not fall inside the warm-up "
                         f"({warmup_epochs} epochs)")
    return warmup, decays


def _warmup_then(base_lr: float, warmup: int, after: optax.Schedule) -> optax.Schedule:
    """Linear 0 -> base_lr over `warmup` steps, then `after` (which counts from the warm-up end)."""
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), after], [warmup])


def learning_rate_schedule(base_lr: float, steps_per_epoch: int, warmup_epochs: float,
                           decay_epochs: Sequence[float] = (26, 36),
                           decay_factor: float = 0.1) -> optax.Schedule:
    """Global schedule: linear warm-up from 0 to base_lr over warmup_epochs, then base_lr
    multiplied by decay_factor at each epoch of decay_epochs (counted from the start of training).

    Step s is the number of updates already taken (optax's count): lr(0) = 0 when there is a
    warm-up, lr(warmup_steps) = base_lr, lr(e * steps_per_epoch) = base_lr * decay_factor for the
    first decay epoch e, and so on.
    """
    warmup, decays = _check(steps_per_epoch, warmup_epochs, decay_epochs, decay_factor)
    after = optax.piecewise_constant_schedule(
        base_lr, {d - warmup: decay_factor for d in decays})
    return _warmup_then(base_lr, warmup, after)


def shift_learning_rate_schedule(base_lr: float, steps_per_epoch: int, warmup_epochs: float,
                                 decay_epochs: Sequence[float] = (26, 36),
                                 decay_factor: float = 0.1,
                                 shift_lr_ratio: float = 0.01) -> optax.Schedule:
    """Shift-group schedule: the global warm-up (0 -> base_lr), then shift_lr_ratio * base_lr with
    the same step decays as `learning_rate_schedule`; i.e. shift_lr_ratio times the global rate
    from the end of the warm-up on. Without warm-up it is shift_lr_ratio times the global rate."""
    if shift_lr_ratio < 0:
        raise ValueError(f"shift_lr_ratio must be >= 0, got {shift_lr_ratio}")
    warmup, decays = _check(steps_per_epoch, warmup_epochs, decay_epochs, decay_factor)
    after = optax.piecewise_constant_schedule(
        base_lr * shift_lr_ratio, {d - warmup: decay_factor for d in decays})
    return _warmup_then(base_lr, warmup, after)


def temperature_schedule(initial: float = 2.0, final: float = 1e-3,
                         total_steps: int | None = None,
                         kind: str = "exponential") -> optax.Schedule:
    """AttentionShift temperature tau(step), annealed from `initial` to `final` over total_steps
    and held at `final` afterwards (the trainer writes it into every AttentionShift, the layers'
    TEMPERATURE_COLLECTION, with rubiks_jax.models.set_temperature).

    kind="exponential": tau = initial * (final / initial) ** (step / total_steps), i.e. a constant
    factor per step (geometric towards 0); kind="linear": a straight line from initial to final.
    total_steps is required (typically the whole training run).
    """
    if total_steps is None or total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 < final <= initial:
        raise ValueError(f"need 0 < final <= initial, got initial={initial}, final={final}")
    if kind == "exponential":
        return optax.exponential_decay(initial, total_steps, final / initial, end_value=final)
    if kind == "linear":
        return optax.linear_schedule(initial, final, total_steps)
    raise ValueError(f"kind must be 'exponential' or 'linear', got {kind!r}")


# --------------------------------------------------------------------------------------------------
# Shift-gradient normalisation


def _normalize_rows(g: jax.Array, temporal_factor: float) -> jax.Array:
    """Rows of g: (C, 3) -> (Z g_t, g_h, g_w) / norm, (C, 2) -> (g_h, g_w) / norm; 0 rows stay 0."""
    v = g.astype(jnp.float32)
    if v.shape[-1] == 3:
        v = v.at[:, 0].multiply(temporal_factor)
    norm = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    nonzero = norm > 0
    v = jnp.where(nonzero, v / jnp.where(nonzero, norm, 1.0), 0.0)
    return v.astype(g.dtype)


def normalize_shift_gradients(
        temporal_factor: float = 0.1,
        mask: Any | Callable[[Any], Any] | None = None) -> optax.GradientTransformation:
    """Normalises RubiksShift shift gradients per channel to unit vectors (docs/DESIGN.md,
    "Training recipe").

    For a (C, 3) leaf with columns (dt, dh, dw), each row g becomes
    v = (Z g_t, g_h, g_w) / ||(Z g_t, g_h, g_w)|| with Z = temporal_factor; a (C, 2) leaf (dh, dw)
    is normalised as it is. Rows with zero norm stay zero. Every other leaf, the AttentionShift
    logits included, passes through unchanged.

    Which leaves are shifts: by default decided by path (`is_rubiks_shift_path`: a leaf named
    `shift` of shape (C, 2|3), which in the rubiks_jax models is `.../shift/shift`); this works
    inside `optax.multi_transform`, where the other groups' leaves are masked out. `mask` (a pytree
    of bools matching the updates, or a callable updates -> such a pytree) overrides the choice.
    Stateless; apply it to the gradient already averaged across devices.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def by_path(path, g):
            return _normalize_rows(g, temporal_factor) if is_rubiks_shift_path(path, g) else g

        if mask is None:
            return jax.tree_util.tree_map_with_path(by_path, updates), state
        m = mask(updates) if callable(mask) else mask

        def by_mask(g, selected):
            if not selected:
                return g
            if g.ndim != 2 or g.shape[-1] not in (2, 3):
                raise ValueError(f"shift gradients must be (C, 2) or (C, 3), got {g.shape}")
            return _normalize_rows(g, temporal_factor)

        return jax.tree_util.tree_map(by_mask, updates, m), state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------------
# The optimizer


def make_optimizer(base_lr: float, steps_per_epoch: int, warmup_epochs: float,
                   decay_epochs: Sequence[float] = (26, 36), decay_factor: float = 0.1,
                   momentum: float = 0.9, weight_decay: float = 1e-4, nesterov: bool = False,
                   shift_lr_ratio: float = 0.01, temporal_factor: float = 0.1,
                   params: Any | None = None, kind: str = "sgd", freeze_shifts: bool = False
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """The RubiksNet SGD recipe as one `optax.multi_transform` over `param_groups`.

    kind="adam" swaps SGD for Adam (b1 = momentum) in every group, keeping the groups, schedules,
    coupled weight decay and shift normalisation: quicker from scratch on small data (the
    built-in synthetic set); the published recipe is "sgd".

    - "decay": add_decayed_weights(weight_decay) then SGD (momentum, nesterov) at the global
      schedule: PyTorch SGD with weight_decay (coupled L2: the decay enters the momentum buffer).
    - "no_decay": the same SGD without decay.
    - "shift": normalize_shift_gradients(temporal_factor) then SGD (momentum) at the shift schedule.
      With freeze_shifts=True the group gets no update at all, warm-up included (its schedule is
      0): the shifts stay at their initialisation, bit for bit (the fixed-shift ablation).

    Labels are computed from the tree passed to init/update (`param_groups` is given to
    multi_transform as a callable), so the same optimizer serves any model; pass `params` to
    check the labelling eagerly (a ValueError for an unclassifiable leaf). Returns the
    transformation and the per-group schedules {"decay", "no_decay", "shift"} (step -> lr) so
    a trainer can log the current learning rates (see `learning_rates`).
    """
    if params is not None:
        param_groups(params)
    lr = learning_rate_schedule(base_lr, steps_per_epoch, warmup_epochs, decay_epochs,
                                decay_factor)
    shift_lr = shift_learning_rate_schedule(base_lr, steps_per_epoch, warmup_epochs, decay_epochs,
                                            decay_factor, shift_lr_ratio)
    if freeze_shifts:
        shift_lr = optax.constant_schedule(0.0)
    if kind == "sgd":
        step = lambda rate: optax.sgd(rate, momentum=momentum, nesterov=nesterov)  # noqa: E731
    elif kind == "adam":
        step = lambda rate: optax.adam(rate, b1=momentum, nesterov=nesterov)  # noqa: E731
    else:
        raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
    transforms = {
        DECAY: optax.chain(optax.add_decayed_weights(weight_decay), step(lr)),
        NO_DECAY: step(lr),
        SHIFT: (optax.set_to_zero() if freeze_shifts else
                optax.chain(normalize_shift_gradients(temporal_factor), step(shift_lr))),
    }
    return optax.multi_transform(transforms, param_groups), {DECAY: lr, NO_DECAY: lr,
                                                             SHIFT: shift_lr}


def learning_rates(schedules: dict[str, optax.Schedule], step: jax.typing.ArrayLike
                   ) -> dict[str, jax.Array]:
    """The learning rate of each group at `step` (the number of updates taken), for logging."""
    return {group: jnp.asarray(schedule(step)) for group, schedule in schedules.items()}
