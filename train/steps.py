"""The train and eval steps, written per device and `pmap`ped over the "batch" axis by the trainer:
gradients and metrics are averaged over devices, BatchNorm statistics too (the models take
bn_axis_name="batch")."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rubiks_jax.models import budget
from rubiks_jax.layers import TEMPERATURE_COLLECTION

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs: step, parameters, BatchNorm statistics, the AQ
    temperature state (empty for other models), and the optimizer state."""

    step: jax.Array
    params: Any
    batch_stats: Any
    shift_state: Any
    opt_state: Any

    def variables(self) -> dict:
        out = {"params": self.params, "batch_stats": self.batch_stats}
        if self.shift_state:
            out[TEMPERATURE_COLLECTION] = self.shift_state
        return out


def train_step(state: TrainState, batch: dict, rng: jax.Array, temperature: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation, aq_budget: float,
               aq_weight: float) -> tuple[TrainState, dict]:
    """One SGD step on this device's share of the batch; returns the new state and metrics
    averaged over devices (loss, cross-entropy, accuracy, achieved AQ budget)."""
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
    shift_state = jax.tree_util.tree_map(lambda t: jnp.full_like(t, temperature),
                                         state.shift_state)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        if shift_state:
            variables[TEMPERATURE_COLLECTION] = shift_state
        logits, updates = model.apply(variables, batch["video"], train=True,
                                      mutable=["batch_stats"], rngs={"dropout": rng})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        achieved = budget.mean_budget(variables)
        loss = ce + aq_weight * jnp.square(jax.nn.relu(achieved - aq_budget))
        return loss, (logits, updates["batch_stats"], ce, achieved)

    (loss, (logits, batch_stats, ce, achieved)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, AXIS)  # the shift-gradient normalisation runs after this, in tx
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "cross_entropy": ce, "budget": achieved,
               "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              shift_state=shift_state, opt_state=opt_state)
    return new_state, jax.lax.pmean(metrics, AXIS)


def eval_step(state: TrainState, batch: dict, *, model: nn.Module) -> dict:
    """Sums over devices of correct top-1 / top-5 and counted examples; views are averaged
    (softmax scores) per video, padded examples (mask False) count nothing."""
    video = batch["video"]  # (B, V, T, H, W, 3)
    b, v = video.shape[:2]
    logits = model.apply(state.variables(), video.reshape((b * v,) + video.shape[2:]), train=False)
    scores = jnp.mean(jax.nn.softmax(logits.reshape(b, v, -1)), axis=1)
    top5 = jax.lax.top_k(scores, min(5, scores.shape[-1]))[1]
    label = batch["label"][:, None]
    mask = batch["mask"].astype(jnp.float32)
    counts = {"top1": jnp.sum((top5[:, 0] == label[:, 0]) * mask),
              "top5": jnp.sum(jnp.any(top5 == label, axis=1) * mask),
              "count": jnp.sum(mask)}
    return jax.lax.psum(counts, AXIS)
