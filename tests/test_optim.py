"""Tests of rubiks_jax.optim: parameter groups, schedules, shift-gradient normalisation, SGD."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rubiks_jax.layers.blocks import RubiksShiftBlock, batch_norm
from rubiks_jax.models import RubiksNet
from rubiks_jax.models.tsm import TSMResNet
from rubiks_jax.optim import (
    learning_rate_schedule,
    learning_rates,
    make_optimizer,
    normalize_shift_gradients,
    param_groups,
    scale_learning_rate,
    shift_learning_rate_schedule,
    temperature_schedule,
)

VIDEO = jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32)


def _abstract_params(model: nn.Module) -> dict:
    return jax.eval_shape(model.init, jax.random.key(0), VIDEO)["params"]


def _flat(tree) -> dict[str, object]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in flat}


def _expected_label(path: str, leaf) -> str:
    """An independent statement of the grouping, by the module that owns the leaf."""
    *modules, name = path.split("/")
    owner = modules[-1]
    if (owner, name) in (("shift", "shift"), ("attention_shift", "attention")):
        return "shift"
    if owner.startswith("bn") or owner.endswith("_bn") or name == "bias":
        return "no_decay"
    if owner in ("stem", "conv1", "conv2", "conv3", "shortcut", "classifier", "reduce",
                 "expand") and name == "kernel":
        return "decay"
    raise AssertionError(f"unexpected parameter {path} {leaf.shape}")


# --------------------------------------------------------------------------------------------------
# param_groups


@pytest.mark.parametrize("variant", ["rubiks3d", "rubiks3d_aq"])
def test_rubiksnet_groups(variant):
    params = _abstract_params(RubiksNet("tiny", num_classes=5, num_frames=2, variant=variant))
    labels = _flat(param_groups(params))
    leaves = _flat(params)
    assert labels.keys() == leaves.keys()
    for path, leaf in leaves.items():
        assert labels[path] == _expected_label(path, leaf), path
    counts = {g: list(labels.values()).count(g) for g in ("decay", "no_decay", "shift")}
    blocks = 1 + 3 + 4 + 6 + 3
    # one shift per block, plus one attention per block for AQ
    assert counts["shift"] == blocks * (2 if variant == "rubiks3d_aq" else 1)
    # stem + conv1, conv2 per block + 4 stride-2 shortcuts + classifier
    assert counts["decay"] == 1 + 2 * blocks + 4 + 1
    # bn1, bn2 (scale, bias) per block + bn_final + classifier bias
    assert counts["no_decay"] == 4 * blocks + 2 + 1
    # spot checks
    assert labels["stem/kernel"] == "decay"
    assert labels["layer2_block0/shortcut/kernel"] == "decay"
    assert labels["classifier/kernel"] == "decay"
    assert labels["classifier/bias"] == "no_decay"
    assert labels["bn_final/scale"] == "no_decay"
    assert labels["layer1_block1/bn2/bias"] == "no_decay"
    assert labels["layer3_block2/shift/shift"] == "shift"
    if variant == "rubiks3d_aq":
        assert leaves["layer3_block2/shift/shift"].shape[-1] == 2
        assert labels["layer3_block2/attention_shift/attention"] == "shift"
    else:
        assert leaves["layer3_block2/shift/shift"].shape[-1] == 3
        assert not any("attention" in p for p in labels)


def test_rubiksnet_small_se_groups():
    labels = _flat(param_groups(_abstract_params(RubiksNet("small", num_classes=5, num_frames=2))))
    assert labels["layer1_block0/se/reduce/kernel"] == "decay"
    assert labels["layer1_block0/se/expand/kernel"] == "decay"
    # As in the published network, its Dense layers have no bias.
    assert not any(path.startswith("layer1_block0/se/") and path.endswith("/bias")
                   for path in labels)


def test_tsm_groups():
    params = _abstract_params(TSMResNet(18, 5, num_frames=2))
    labels = _flat(param_groups(params))
    leaves = _flat(params)
    for path, leaf in leaves.items():
        assert labels[path] == _expected_label(path, leaf), path
    assert "shift" not in labels.values()
    assert labels["stem/kernel"] == "decay"
    assert labels["stem_bn/scale"] == "no_decay"
    assert labels["layer2_block0/shortcut_bn/bias"] == "no_decay"
    assert labels["classifier/bias"] == "no_decay"


def test_groups_with_top_level_collection_key():
    params = {"params": {"conv": {"kernel": jnp.zeros((3, 3, 2, 4))},
                         "shift": {"shift": jnp.zeros((4, 3))}}}
    labels = param_groups(params)
    assert labels == {"params": {"conv": {"kernel": "decay"}, "shift": {"shift": "shift"}}}


@pytest.mark.parametrize("tree, path", [
    ({"block": {"attention_shift": {"temporal_shift": jnp.zeros((4,))}}},
     "block/attention_shift/temporal_shift"),
    ({"block": {"shift": {"shift": jnp.zeros((4, 5))}}}, "block/shift/shift"),
    ({"dense": {"kernel": jnp.zeros((4,))}}, "dense/kernel"),
    ({"odd": {"weight": jnp.zeros((4, 4))}}, "odd/weight"),
])
def test_groups_reject_unknown_leaves(tree, path):
    with pytest.raises(ValueError, match=path):
        param_groups(tree)


# --------------------------------------------------------------------------------------------------
# Schedules


SCHED = dict(base_lr=0.1, steps_per_epoch=10, warmup_epochs=2, decay_epochs=(4, 6))


@pytest.mark.parametrize("step, lr, shift_lr", [
    (0, 0.0, 0.0),            # start of the warm-up
    (5, 0.025, 0.025),        # a quarter
    (10, 0.05, 0.05),         # mid warm-up: the shift group follows the global rate
    (19, 0.095, 0.095),       # last warm-up step
    (20, 0.1, 0.001),         # end of the warm-up: shift at 1/100
    (39, 0.1, 0.001),
    (40, 0.01, 0.0001),       # first decay (epoch 4)
    (59, 0.01, 0.0001),
    (60, 0.001, 0.00001),     # second decay (epoch 6)
    (10_000, 0.001, 0.00001),
])
def test_learning_rate_values(step, lr, shift_lr):
    _, schedules = make_optimizer(**SCHED)
    got = learning_rates(schedules, step)
    np.testing.assert_allclose(got["decay"], lr, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got["no_decay"], lr, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got["shift"], shift_lr, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(learning_rate_schedule(**SCHED)(step), lr, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(shift_learning_rate_schedule(**SCHED)(step), shift_lr, rtol=1e-6,
                               atol=1e-12)


def test_schedule_options():
    no_warmup = dict(SCHED, warmup_epochs=0)
    np.testing.assert_allclose(learning_rate_schedule(**no_warmup)(0), 0.1, rtol=1e-6)
    shift = shift_learning_rate_schedule(**no_warmup, shift_lr_ratio=0.5, decay_factor=0.5)
    np.testing.assert_allclose([shift(0), shift(40), shift(60)], [0.05, 0.025, 0.0125], rtol=1e-6)
    # default decays at epochs 26 and 36
    default = learning_rate_schedule(0.025, 100, 1)
    np.testing.assert_allclose([default(2599), default(2600), default(3600)],
                               [0.025, 0.0025, 0.00025], rtol=1e-5)
    with pytest.raises(ValueError, match="warm-up"):
        learning_rate_schedule(0.1, 10, 5, decay_epochs=(4, 6))
    with pytest.raises(ValueError, match="increasing"):
        learning_rate_schedule(0.1, 10, 1, decay_epochs=(6, 4))


def test_scale_learning_rate():
    assert scale_learning_rate(0.025, 64) == pytest.approx(0.025)
    assert scale_learning_rate(0.025, 256) == pytest.approx(0.1)
    assert scale_learning_rate(0.025, 32) == pytest.approx(0.0125)
    assert scale_learning_rate(0.1, 8, reference_batch=16) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        scale_learning_rate(0.025, 0)


def test_temperature_schedule():
    tau = temperature_schedule(2.0, 1e-3, 100)
    np.testing.assert_allclose(tau(0), 2.0, rtol=1e-6)
    np.testing.assert_allclose(tau(50), np.sqrt(2.0 * 1e-3), rtol=1e-4)  # geometric midpoint
    np.testing.assert_allclose(tau(100), 1e-3, rtol=1e-4)
    np.testing.assert_allclose(tau(10_000), 1e-3, rtol=1e-6)  # held at the final value
    values = np.asarray([tau(s) for s in range(0, 120, 10)])
    assert np.all(np.diff(values) <= 0) and np.all(values >= 1e-3 * (1 - 1e-6))
    linear = temperature_schedule(initial=2.0, final=0.5, total_steps=100, kind="linear")
    np.testing.assert_allclose([linear(0), linear(50), linear(200)], [2.0, 1.25, 0.5], rtol=1e-6)
    with pytest.raises(ValueError):
        temperature_schedule(total_steps=100, kind="cosine")
    with pytest.raises(ValueError):
        temperature_schedule(1.0, 0.0, 100)
    with pytest.raises(ValueError):
        temperature_schedule(2.0, 1e-3)  # total_steps missing


# --------------------------------------------------------------------------------------------------
# Shift-gradient normalisation

G3 = np.array([[10.0, 3.0, 4.0],     # (Z*10, 3, 4) = (1, 3, 4) / sqrt(26)
               [0.0, 0.0, 0.0],      # zero row stays zero
               [-20.0, 0.0, 0.0],    # purely temporal: (-1, 0, 0)
               [0.0, 3.0, 4.0],      # purely spatial: (0, .6, .8)
               [1.0, 1e-3, 0.0]],    # (0.1, 1e-3, 0) / norm
              np.float32)
V3 = np.array([[1 / np.sqrt(26), 3 / np.sqrt(26), 4 / np.sqrt(26)],
               [0.0, 0.0, 0.0],
               [-1.0, 0.0, 0.0],
               [0.0, 0.6, 0.8],
               [0.1 / np.hypot(0.1, 1e-3), 1e-3 / np.hypot(0.1, 1e-3), 0.0]], np.float32)
G2 = np.array([[3.0, -4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
V2 = np.array([[0.6, -0.8], [0.0, 0.0], [1.0, 0.0]], np.float32)
ATT = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
KERNEL = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)


def _shift_grads():
    return {"block_a": {"shift": {"shift": jnp.asarray(G3)},
                        "conv1": {"kernel": jnp.asarray(KERNEL)}},
            "block_b": {"shift": {"shift": jnp.asarray(G2)},
                        "attention_shift": {"attention": jnp.asarray(ATT)}}}


def test_normalize_shift_gradients_values():
    tx = normalize_shift_gradients(temporal_factor=0.1)
    grads = _shift_grads()
    out, _ = jax.jit(tx.update)(grads, tx.init(grads))
    np.testing.assert_allclose(out["block_a"]["shift"]["shift"], V3, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["block_b"]["shift"]["shift"], V2, rtol=1e-5, atol=1e-7)
    # attention logits and other leaves pass through unchanged
    np.testing.assert_array_equal(out["block_b"]["attention_shift"]["attention"], ATT)
    np.testing.assert_array_equal(out["block_a"]["conv1"]["kernel"], KERNEL)
    # unit norm of the Z-weighted vector for every non-zero row, zeros and no NaN elsewhere
    v3 = np.asarray(out["block_a"]["shift"]["shift"])
    assert np.all(np.isfinite(v3))
    nonzero = np.any(G3 != 0, axis=1)
    np.testing.assert_allclose(np.linalg.norm(v3[nonzero], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(v3[~nonzero], 0.0)
    # the result is the Z-weighted gradient's direction
    weighted = G3 * np.array([0.1, 1.0, 1.0], np.float32)
    w = weighted[nonzero]
    cos = np.sum(v3[nonzero] * w, axis=1) / np.linalg.norm(w, axis=1)
    np.testing.assert_allclose(cos, 1.0, rtol=1e-6)


def test_normalize_temporal_factor_and_mask():
    grads = _shift_grads()
    plain, _ = normalize_shift_gradients(temporal_factor=1.0).update(grads, optax.EmptyState())
    g = G3[0]
    np.testing.assert_allclose(plain["block_a"]["shift"]["shift"][0], g / np.linalg.norm(g),
                               rtol=1e-6)
    # an explicit mask overrides the path rule: only block_b's shift is normalised here
    mask = {"block_a": {"shift": {"shift": False}, "conv1": {"kernel": False}},
            "block_b": {"shift": {"shift": True}, "attention_shift": {"attention": False}}}
    masked, _ = normalize_shift_gradients(mask=mask).update(grads, optax.EmptyState())
    np.testing.assert_array_equal(masked["block_a"]["shift"]["shift"], G3)
    np.testing.assert_allclose(masked["block_b"]["shift"]["shift"], V2, rtol=1e-5, atol=1e-7)


def test_shift_group_uses_normalised_gradients_at_shift_rate():
    grads = _shift_grads()
    params = jax.tree_util.tree_map(jnp.ones_like, grads)
    tx, schedules = make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0,
                                   decay_epochs=(4,), params=params)
    updates, _ = tx.update(grads, tx.init(params), params)
    lr_shift = 0.1 * 0.01
    np.testing.assert_allclose(schedules["shift"](0), lr_shift, rtol=1e-6)
    np.testing.assert_allclose(updates["block_a"]["shift"]["shift"], -lr_shift * V3, rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(updates["block_b"]["shift"]["shift"], -lr_shift * V2, rtol=1e-5,
                               atol=1e-9)
    # attention logits: plain SGD at the shift rate, no normalisation, no weight decay
    np.testing.assert_allclose(updates["block_b"]["attention_shift"]["attention"],
                               -lr_shift * ATT, rtol=1e-5)
    # kernels: global rate with coupled weight decay
    np.testing.assert_allclose(updates["block_a"]["conv1"]["kernel"],
                               -0.1 * (KERNEL + 1e-4 * 1.0), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# The optimizer on a small model


class SmallNet(nn.Module):
    """A stem, a rubiks3d block, an AQ block with squeeze-excite, BN, and a classifier."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), strides=(2, 2), use_bias=False, name="stem")(x)
        x = RubiksShiftBlock(8, 1, variant="rubiks3d", name="block0")(x, train)
        x = RubiksShiftBlock(16, 2, variant="rubiks3d_aq", se=True, name="block1")(x, train)
        x = nn.relu(batch_norm(train, None, jnp.float32, "bn_final")(x))
        x = jnp.mean(x, axis=(2, 3))
        return jnp.mean(nn.Dense(3, name="classifier")(x), axis=1)


@pytest.fixture(scope="module")
def small_net():
    model = SmallNet()
    x = jax.random.normal(jax.random.key(1), (2, 2, 16, 16, 3))
    variables = model.init(jax.random.key(0), x)
    return model, variables, x


def test_weight_decay_only_on_decay_group(small_net):
    _, variables, _ = small_net
    params = variables["params"]
    labels = _flat(param_groups(params))
    assert set(labels.values()) == {"decay", "no_decay", "shift"}
    lr, wd = 0.2, 1e-3
    tx, _ = make_optimizer(base_lr=lr, steps_per_epoch=10, warmup_epochs=0, decay_epochs=(4,),
                           weight_decay=wd, params=params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    flat_p, flat_u = _flat(params), _flat(updates)
    for path, u in flat_u.items():
        if labels[path] == "decay":
            np.testing.assert_allclose(u, -lr * wd * flat_p[path], rtol=1e-5, atol=1e-12)
            assert np.any(np.asarray(u) != 0), path
        else:
            np.testing.assert_array_equal(u, 0.0, err_msg=path)


def test_momentum_matches_pytorch_sgd():
    params = {"bn": {"bias": jnp.ones((2,))}, "conv": {"kernel": jnp.full((1, 1, 1, 2), 2.0)}}
    grads = {"bn": {"bias": jnp.array([1.0, -1.0])}, "conv": {"kernel": jnp.zeros((1, 1, 1, 2))}}
    lr, wd, mu = 0.1, 0.01, 0.9
    tx, _ = make_optimizer(base_lr=lr, steps_per_epoch=10, warmup_epochs=0, decay_epochs=(),
                           momentum=mu, weight_decay=wd)
    state = tx.init(params)
    buf = {"bias": np.zeros(2), "kernel": np.zeros(2)}
    p = {"bias": np.ones(2), "kernel": np.full(2, 2.0)}
    for _ in range(3):  # PyTorch: d = g + wd * p; buf = mu * buf + d; p -= lr * buf
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        buf["bias"] = mu * buf["bias"] + np.array([1.0, -1.0])
        buf["kernel"] = mu * buf["kernel"] + wd * p["kernel"]
        p = {k: p[k] - lr * buf[k] for k in p}
    np.testing.assert_allclose(params["bn"]["bias"], p["bias"], rtol=1e-6)
    np.testing.assert_allclose(params["conv"]["kernel"].ravel(), p["kernel"], rtol=1e-6)


def test_end_to_end_step_jit_and_pmap(small_net):
    model, variables, x = small_net
    labels = jnp.array([0, 2])

    state = {k: v for k, v in variables.items() if k != "params"}  # batch_stats, temperature

    def loss_fn(params):
        logits, _ = model.apply({"params": params, **state}, x, train=True,
                                mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    tx, schedules = make_optimizer(base_lr=0.1, steps_per_epoch=2, warmup_epochs=1,
                                   decay_epochs=(2,), params=variables["params"])

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, grads

    p0 = variables["params"]
    s0 = jax.jit(tx.init)(p0)
    p1, s1, g0 = step(p0, s0)  # step 0: lr 0 in the warm-up
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p0)
    p2, s2, g1 = step(p1, s1)  # step 1: lr 0.05 for every group (still warming up)
    np.testing.assert_allclose(learning_rates(schedules, 1)["shift"], 0.05, rtol=1e-6)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(p2))
    moved = _flat(jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), p2, p1))
    for path in ("stem/kernel", "block0/bn1/scale", "block0/shift/shift", "block1/shift/shift",
                 "block1/attention_shift/attention", "block1/se/expand/kernel",
                 "classifier/bias"):
        assert moved[path], path
    # RubiksShift steps follow the normalised gradients through momentum:
    # p2 - p1 = -lr * (0.9 * n(g0) + n(g1))
    normalize = normalize_shift_gradients(0.1)
    n0, _ = normalize.update(g0, optax.EmptyState())
    n1, _ = normalize.update(g1, optax.EmptyState())
    for block in ("block0", "block1"):
        delta = p2[block]["shift"]["shift"] - p1[block]["shift"]["shift"]
        expected = -0.05 * (0.9 * n0[block]["shift"]["shift"] + n1[block]["shift"]["shift"])
        np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-7)
    assert p2["block0"]["shift"]["shift"].shape[-1] == 3
    assert p2["block1"]["shift"]["shift"].shape[-1] == 2

    # the same update under pmap (one device here) after a cross-device mean of the gradients
    pstep = jax.pmap(lambda p, s, g: _update(tx, p, s, jax.lax.pmean(g, "batch")),
                     axis_name="batch")
    replicate = lambda tree: jax.tree_util.tree_map(lambda a: a[None], tree)  # noqa: E731
    pp2, ps2 = pstep(replicate(p1), replicate(s1), replicate(g1))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-7),
                           pp2, p2)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-7),
                           ps2, s2)


def _update(tx, params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def test_adam_kind_keeps_groups_and_schedules():
    from rubiks_jax import optim

    params = {"conv": {"kernel": jnp.ones((1, 1, 2, 2))}, "bn": {"scale": jnp.ones((2,))},
              "shift": {"shift": jnp.ones((2, 3))}}
    tx, schedules = optim.make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0,
                                         decay_epochs=(5,), kind="adam", params=params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Adam's first step moves every coordinate by about its learning rate.
    np.testing.assert_allclose(updates["bn"]["scale"], -0.1, rtol=1e-3)
    np.testing.assert_allclose(np.abs(updates["shift"]["shift"]), 0.1 * 0.01, rtol=1e-3)
    with pytest.raises(ValueError, match="kind must be 'sgd' or 'adam'"):
        optim.make_optimizer(base_lr=0.1, steps_per_epoch=10, warmup_epochs=0, decay_epochs=(5,),
                             kind="rmsprop")


def test_freeze_shifts_never_moves_the_shift_group_warm_up_included(small_net):
    """Steps inside the warm-up and after it: every shift-group leaf (RubiksShift shifts,
    AttentionShift logits) ends bit-identical to its initial value; the other groups move."""
    from rubiks_jax import optim

    model, variables, x = small_net
    params = variables["params"]
    tx, schedules = make_optimizer(base_lr=0.5, steps_per_epoch=2, warmup_epochs=1,
                                   decay_epochs=(3,), kind="adam", freeze_shifts=True,
                                   params=params)
    loss = lambda p: jnp.sum(model.apply({**variables, "params": p}, x) ** 2)  # noqa: E731
    state, current = tx.init(params), params
    for _ in range(4):
        updates, state = tx.update(jax.grad(loss)(current), state, current)
        current = optax.apply_updates(current, updates)
    groups = param_groups(params)
    moved = {g: False for g in optim.GROUPS}
    for g, a, b in zip(jax.tree_util.tree_leaves(groups), jax.tree_util.tree_leaves(params),
                       jax.tree_util.tree_leaves(current)):
        if g == optim.SHIFT:
            np.testing.assert_array_equal(a, b)
        moved[g] |= not np.array_equal(a, b)
    assert moved[optim.DECAY] and moved[optim.NO_DECAY] and not moved[optim.SHIFT]
    assert float(schedules[optim.SHIFT](3)) == 0.0
