"""The pmapped train step on 4 host devices equals the single-device step on the same global
batch; the AQ step sets the temperature and the family's budget loss lowers the budget."""

import os
import subprocess
import sys
import textwrap

import flax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from rubiks_jax.layers import RubiksShiftBlock
from train import evaluation, steps


class Small(nn.Module):
    """Stem, one RubiksShift block, 5-way classifier: quick to compile. (B, T, H, W, 3) -> (B, 5)."""
    variant: str = "rubiks3d"
    bn_axis_name: str | None = steps.AXIS

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), (2, 2), use_bias=False)(x)
        x = RubiksShiftBlock(8, 1, variant=self.variant, bn_axis_name=self.bn_axis_name)(x, train)
        return jnp.mean(nn.Dense(5)(jnp.mean(x, axis=(2, 3))), axis=1)


SCRIPT = textwrap.dedent("""
    import functools
    import flax, jax, jax.numpy as jnp, numpy as np
    from rubiks_jax import optim
    from rubiks_jax.models import get_loss
    from tests.train.test_steps import Small
    from train import steps

    rng = np.random.default_rng(0)
    batch = {"video": jnp.asarray(rng.standard_normal((8, 4, 8, 8, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 5, 8), jnp.int32)}
    results = {}
    for n_dev in (1, 4):
        model = Small(bn_axis_name=steps.AXIS)
        variables = model.init(jax.random.PRNGKey(0), batch["video"][:1])
        tx, _ = optim.make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0,
                                     decay_epochs=(5,), params=variables["params"])
        state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                 batch_stats=variables["batch_stats"], temperature={},
                                 opt_state=tx.init(variables["params"]))
        step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                          loss_fn=get_loss("rubiksnet")),
                        axis_name=steps.AXIS, devices=jax.devices()[:n_dev])
        repl = flax.jax_utils.replicate(state, jax.devices()[:n_dev])
        sharded = jax.tree_util.tree_map(lambda x: x.reshape((n_dev, -1) + x.shape[1:]), batch)
        for _ in range(3):
            repl, metrics = step(repl, sharded, flax.jax_utils.replicate(jax.random.PRNGKey(1),
                                 jax.devices()[:n_dev]))
        first = lambda t: jax.tree_util.tree_map(lambda x: np.asarray(x)[0], t)
        results[n_dev] = (first(repl),
                          {k: float(v[0]) for k, v in metrics.items()})
    (s1, m1), (s4, m4) = results[1], results[4]
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s4)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    for k in m1:
        np.testing.assert_allclose(m1[k], m4[k], rtol=1e-4, atol=1e-5)
    print("pmap step ok")
""")


@pytest.mark.slow
def test_pmapped_step_on_four_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.returncode == 0 and "pmap step ok" in out.stdout, out.stderr[-4000:]


def test_aq_step_sets_temperature_and_budget_loss_lowers_the_budget():
    import functools

    import jax

    from rubiks_jax import optim
    from rubiks_jax.layers import TEMPERATURE_COLLECTION
    from rubiks_jax.models import get_loss, mean_budget

    rng = np.random.default_rng(0)
    batch = {"video": jnp.asarray(rng.standard_normal((1, 4, 4, 8, 8, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 5, (1, 4)), jnp.int32)}
    model = Small(variant="rubiks3d_aq")
    v = model.init(jax.random.PRNGKey(0), batch["video"][0, :1])
    tx, _ = optim.make_optimizer(base_lr=1.0, steps_per_epoch=10, warmup_epochs=0,
                                 decay_epochs=(5,), shift_lr_ratio=1.0, params=v["params"])
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                             batch_stats=v["batch_stats"],
                             temperature=v[TEMPERATURE_COLLECTION],
                             opt_state=tx.init(v["params"]))
    loss_fn = get_loss("rubiksnet", variant="rubiks3d_aq", budget=0.0, budget_weight=100.0)
    step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx, loss_fn=loss_fn,
                                      temperature_fn=lambda step: 0.5),
                    axis_name=steps.AXIS, devices=jax.devices()[:1])
    repl = flax.jax_utils.replicate(state, jax.devices()[:1])
    at_init = float(mean_budget(v))  # temperature 2.0
    new, metrics = step(repl, batch, flax.jax_utils.replicate(jax.random.PRNGKey(1),
                                                               jax.devices()[:1]))
    new = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], new)
    temps = jax.tree_util.tree_leaves(new.temperature)
    assert temps and all(float(t) == 0.5 for t in temps)
    after = float(mean_budget(new.variables()))
    at_half = float(mean_budget({"params": v["params"],
                                 TEMPERATURE_COLLECTION: jax.tree_util.tree_map(
                                     lambda t: jnp.full_like(t, 0.5),
                                     v[TEMPERATURE_COLLECTION])}))
    assert abs(float(metrics["budget"][0]) - at_half) < 1e-5  # reported at the step's temperature
    assert after < at_half and abs(at_init - at_half) > 1e-4


def test_a_non_finite_step_changes_nothing_but_the_step_counter():
    import functools

    import jax

    from rubiks_jax import optim
    from rubiks_jax.models import get_loss

    rng = np.random.default_rng(0)
    video = rng.standard_normal((1, 4, 4, 8, 8, 3)).astype(np.float32)
    label = jnp.asarray(rng.integers(0, 5, (1, 4)), jnp.int32)
    model = Small()
    v = model.init(jax.random.PRNGKey(0), jnp.asarray(video[0, :1]))
    tx, _ = optim.make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0,
                                 decay_epochs=(5,), params=v["params"], kind="adam")
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                             batch_stats=v["batch_stats"], temperature={},
                             opt_state=tx.init(v["params"]))
    step = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                      loss_fn=get_loss("rubiksnet")),
                    axis_name=steps.AXIS, devices=jax.devices()[:1])
    rngs = flax.jax_utils.replicate(jax.random.PRNGKey(1), jax.devices()[:1])
    before = flax.jax_utils.replicate(state, jax.devices()[:1])
    bad = video.copy()
    bad[0, 2, 1, 3, 3, 0] = np.nan  # one pixel of one clip
    after, metrics = step(before, {"video": jnp.asarray(bad), "label": label}, rngs)
    assert not bool(metrics["finite"][0])
    assert int(after.step[0]) == 1
    for a, b in zip(jax.tree_util.tree_leaves((after.params, after.batch_stats, after.opt_state)),
                    jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state))):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b))
    good, metrics = step(after, {"video": jnp.asarray(video), "label": label}, rngs)
    assert bool(metrics["finite"][0]) and int(good.step[0]) == 2
    kernel = lambda s: np.asarray(jax.tree_util.tree_leaves(s.params)[0])
    assert not np.array_equal(kernel(good)[0], kernel(state))


def test_views_are_combined_as_softmax_scores_or_as_logits():
    """Ours averages the views' softmax scores, the published code their logits: two views whose
    logits are (10, 9, 0) and (0, 9, 9.9) give class 0 by scores and class 1 by logits."""
    class Echo(nn.Module):  # logits = the first pixel of the first frame
        @nn.compact
        def __call__(self, x, train=False):
            return x[:, 0, 0, 0, :]

    video = np.zeros((1, 2, 1, 1, 1, 3), np.float32)
    video[0, 0, 0, 0, 0] = (10.0, 9.0, 0.0)
    video[0, 1, 0, 0, 0] = (0.0, 9.0, 9.9)
    state = flax.jax_utils.replicate(steps.TrainState(step=jnp.zeros((), jnp.int32), params={},
                                                      batch_stats={}, temperature={},
                                                      opt_state=()))
    for views, label in (("2clip", 0), ("official_2clip", 1)):
        batch = {"video": jnp.asarray(video), "label": jnp.asarray([label], jnp.int32),
                 "mask": jnp.asarray([True])}
        counts = flax.jax_utils.unreplicate(evaluation.make_eval_fn(Echo(), views)(state, batch))
        assert float(counts["top1"]) == 1.0, views
