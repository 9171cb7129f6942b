"""Gradient accumulation (config.optim.accumulate_steps): k micro-batches make the step of the whole
batch for a model without BatchNorm; with BatchNorm each micro-batch updates the running statistics
in turn; a non-finite micro-batch leaves the step unapplied."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rubiks_jax import optim
from rubiks_jax.models import get_loss
from train import steps


class NoNorm(nn.Module):
    """Per-frame conv, pooled, a classifier: (N, T, H, W, 3) -> (N, 5) logits; no BatchNorm."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3), (2, 2))(x))
        return jnp.mean(nn.Dense(5)(jnp.mean(x, axis=(2, 3))), axis=1)


class Normed(nn.Module):
    """NoNorm with a BatchNorm after the conv (statistics across devices under pmap)."""

    bn_axis_name: str | None = steps.AXIS

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), (2, 2), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         axis_name=self.bn_axis_name if train else None)(x)
        return jnp.mean(nn.Dense(5)(jnp.mean(nn.relu(x), axis=(2, 3))), axis=1)


def _batch(seed: int = 0, n: int = 8) -> dict:
    rng = np.random.default_rng(seed)
    return {"video": rng.standard_normal((1, n, 4, 8, 8, 3)).astype(np.float32),  # 1 device
            "label": rng.integers(0, 5, (1, n)).astype(np.int32)}


def _run(model: nn.Module, k: int, batches: list[dict]) -> tuple[steps.TrainState, dict]:
    """The state after one train step per batch with accumulate_steps=k (SGD with momentum and
    weight decay, the recipe's optimizer), unreplicated, and the last step's metrics."""
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8, 3)))
    tx, _ = optim.make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0,
                                 decay_epochs=(5,), params=variables["params"])
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), temperature={},
                             opt_state=tx.init(variables["params"]))
    devices = jax.devices()[:1]
    step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                      loss_fn=get_loss("rubiksnet"), accumulate_steps=k),
                    axis_name=steps.AXIS, devices=devices)
    repl = flax.jax_utils.replicate(state, devices)
    rng = flax.jax_utils.replicate(jax.random.PRNGKey(1), devices)
    metrics = {}
    for batch in batches:
        repl, metrics = step(repl, jax.tree_util.tree_map(jnp.asarray, batch), rng)
    first = lambda t: jax.tree_util.tree_map(lambda x: np.asarray(x)[0], t)  # noqa: E731
    return first(repl), first(metrics)


def test_k_micro_batches_make_the_step_of_the_whole_batch_without_batchnorm():
    batches = [_batch(seed) for seed in range(3)]
    whole, m1 = _run(NoNorm(), 1, batches)
    for k in (2, 4, 8):
        accumulated, mk = _run(NoNorm(), k, batches)
        assert int(accumulated.step) == 3
        for a, b in zip(jax.tree_util.tree_leaves((whole.params, whole.opt_state)),
                        jax.tree_util.tree_leaves((accumulated.params, accumulated.opt_state))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        for name in ("loss", "cross_entropy", "accuracy"):
            np.testing.assert_allclose(m1[name], mk[name], rtol=1e-5)
        assert bool(mk["finite"])


def test_batchnorm_normalises_each_micro_batch_and_updates_the_statistics_in_turn():
    batch = _batch()
    state, _ = _run(Normed(), 2, [batch])
    # The statistics after the step: the model run in training mode on micro-batch 0, then 1.
    model = Normed(bn_axis_name=None)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8, 3)))
    for micro in np.split(batch["video"][0], 2):
        _, updates = model.apply(variables, micro, train=True, mutable=["batch_stats"])
        variables = {**variables, "batch_stats": updates["batch_stats"]}
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
                           state.batch_stats, jax.device_get(variables["batch_stats"]))
    whole, _ = _run(Normed(), 1, [batch])
    mean = lambda s: jax.tree_util.tree_leaves(s.batch_stats)[0]  # noqa: E731
    assert not np.allclose(mean(whole), mean(state))  # not the one update of the whole batch


def test_a_non_finite_micro_batch_leaves_the_step_unapplied():
    bad = _batch()
    bad["video"][0, 6, 1, 2, 2, 0] = np.nan  # the last of 4 micro-batches
    before, _ = _run(NoNorm(), 4, [])
    after, metrics = _run(NoNorm(), 4, [bad])
    assert not bool(metrics["finite"]) and int(after.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, after.params, before.params)
