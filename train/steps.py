"""The train and eval steps, written per device and `pmap`ped over the "batch" axis by the trainer
and the evaluation: gradients and metrics are averaged over devices, BatchNorm statistics too (the
models take bn_axis_name="batch"). The loss is the model family's (rubiks_jax.models.get_loss)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import set_temperature
from rubiks_jax.models.registry import LossFn

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs: step, parameters, BatchNorm statistics, the annealed
    temperature of the AttentionShift layers (TEMPERATURE_COLLECTION; empty for other models) and
    the optimizer state."""

    step: jax.Array
    params: Any
    batch_stats: Any
    temperature: Any
    opt_state: Any

    def variables(self) -> dict:
        out = {"params": self.params, "batch_stats": self.batch_stats}
        if self.temperature:
            out[TEMPERATURE_COLLECTION] = self.temperature
        return out


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, loss_fn: LossFn,
               temperature_fn: Callable[[jax.Array], jax.Array] | None = None,
               accumulate_steps: int = 1) -> tuple[TrainState, dict]:
    """One optimizer step on this device's share of {"video": (B, T, H, W, 3), "label": (B,)}.

    temperature_fn(step) is written into the model's temperature first (a no-op for models without
    one). With accumulate_steps = k > 1 the batch is cut into k micro-batches of B/k, run one after
    the other (lax.scan: activations of B/k in memory) and their gradients averaged: the gradient of
    the whole batch, one optimizer step. BatchNorm normalises each micro-batch by its own
    statistics and updates the running ones k times in turn (as accumulation does in PyTorch).
    Returns the new state and metrics averaged over devices (and micro-batches): "loss", the loss's
    own metrics ("cross_entropy", AQ's "budget") and "accuracy", and "finite" (False: the step was
    not applied).
    """
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
    variables = state.variables()
    if temperature_fn is not None:
        variables = set_temperature(variables, temperature_fn(state.step))

    def gradients(batch_stats, micro: dict, rng: jax.Array):
        """(updated BatchNorm statistics, gradients, metrics) of one (micro-)batch."""
        def objective(params):
            current = {**variables, "params": params, "batch_stats": batch_stats}
            logits, updates = model.apply(current, micro["video"], train=True,
                                          mutable=["batch_stats"], rngs={"dropout": rng})
            loss, metrics = loss_fn(logits, micro["label"], current)
            metrics = {"loss": loss, **metrics,
                       "accuracy": jnp.mean(jnp.argmax(logits, -1) == micro["label"])}
            return loss, (updates.get("batch_stats", {}), metrics)

        (_, (batch_stats, metrics)), grads = jax.value_and_grad(
            objective, has_aux=True)(state.params)
        return batch_stats, grads, metrics

    if accumulate_steps == 1:
        batch_stats, grads, metrics = gradients(state.batch_stats, batch, rng)
    else:
        k = accumulate_steps
        micro = jax.tree_util.tree_map(lambda x: x.reshape((k, -1) + x.shape[1:]), batch)

        def accumulate(carry, xs):
            batch_stats, total = carry
            i, mb = xs
            batch_stats, grads, metrics = gradients(batch_stats, mb, jax.random.fold_in(rng, i))
            return (batch_stats, jax.tree_util.tree_map(jnp.add, total, grads)), metrics

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (batch_stats, total), metrics = jax.lax.scan(
            accumulate, (state.batch_stats, zeros), (jnp.arange(k), micro))
        grads = jax.tree_util.tree_map(lambda g: g / k, total)
        metrics = jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)
    grads = jax.lax.pmean(grads, AXIS)  # the shift-gradient normalisation runs after this, in tx
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = jax.lax.pmean(metrics, AXIS)
    # A step whose loss, gradients or BatchNorm statistics are not finite on any device changes
    # nothing but the step counter (the data stream stays aligned); the trainer stops the run or
    # skips it (config.max_bad_steps). So a saved state is always finite.
    finite = jnp.logical_and(all_finite((grads, batch_stats)), jnp.isfinite(metrics["loss"]))
    finite = jax.lax.pmin(finite.astype(jnp.int32), AXIS).astype(bool)
    candidate = state.replace(params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats,
                              temperature=variables.get(TEMPERATURE_COLLECTION, {}),
                              opt_state=opt_state)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old),
                                       candidate, state)
    return new_state.replace(step=state.step + 1), {**metrics, "finite": finite}


def all_finite(tree: Any) -> jax.Array:
    """True where every floating-point leaf of `tree` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def eval_step(state: TrainState, batch: dict, *, model: nn.Module, combine: str = "softmax") -> dict:
    """Sums over devices of correct top-1 / top-5 and counted examples; padded examples (mask
    False) count nothing. A video's views are averaged as softmax scores ("softmax", ours) or as
    logits ("logits", the published code's)."""
    video = batch["video"]  # (B, V, T, H, W, 3)
    b, v = video.shape[:2]
    logits = model.apply(state.variables(), video.reshape((b * v,) + video.shape[2:]), train=False)
    logits = logits.reshape(b, v, -1)
    if combine not in ("softmax", "logits"):
        raise ValueError(f"combine must be 'softmax' or 'logits', got {combine!r}")
    scores = jnp.mean(jax.nn.softmax(logits) if combine == "softmax" else logits, axis=1)
    top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))[1]
    label = batch["label"][:, None]
    mask = batch["mask"].astype(jnp.float32)
    counts = {"top1": jnp.sum((top5[:, 0] == label[:, 0]) * mask),
              "top5": jnp.sum(jnp.any(top5 == label, axis=1) * mask),
              "count": jnp.sum(mask)}
    return jax.lax.psum(counts, AXIS)
