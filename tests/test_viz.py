"""rubiks_jax.viz: the shifts it reads from a model's variables (known values set into the
parameters), its per-stage statistics against numpy, the AQ fractions against budget_stats and
the inference form, and the figures it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from rubiks_jax import viz
from rubiks_jax.models import RubiksNet, budget_stats, to_inference

CLIP = (1, 8, 32, 32, 3)
# RubiksNet-Tiny: one block in layer0, then (3, 4, 6, 3); widths 54 * 2^(stage - 1).
TINY_BLOCKS = {0: 1, 1: 3, 2: 4, 3: 6, 4: 3}
TINY_WIDTH = {0: 54, 1: 54, 2: 108, 3: 216, 4: 432}


def _variables(model: RubiksNet, seed: int, temperature: float = 0.7) -> dict:
    """The model's variable tree (shapes from init, not run) filled with known random values: shifts
    U(-3, 3), attention logits U(0, 1), every AQ temperature `temperature`."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(CLIP), train=False))
    rng = np.random.default_rng(seed)
    out = {}
    for collection, tree in shapes.items():
        flat = flatten_dict(tree, sep="/")
        filled = {}
        for path, s in flat.items():
            if collection == "temperature":
                filled[path] = np.full(s.shape, temperature, np.float32)
            elif path.endswith("/shift"):
                filled[path] = rng.uniform(-3, 3, s.shape).astype(np.float32)
            else:
                filled[path] = rng.uniform(0, 1, s.shape).astype(np.float32)
        out[collection] = unflatten_dict(filled, sep="/")
    return out


@pytest.fixture(scope="module")
def tiny():
    model = RubiksNet("tiny", num_classes=5)
    return model, _variables(model, seed=1)


@pytest.fixture(scope="module")
def tiny_aq():
    model = RubiksNet("tiny", num_classes=5, variant="rubiks3d_aq")
    return model, _variables(model, seed=2)


def _expected_order() -> list[str]:
    return [f"layer{s}_block{b}" for s, n in TINY_BLOCKS.items() for b in range(n)]


def test_collects_every_shift_in_network_order(tiny):
    _, variables = tiny
    layers = viz.collect_shifts(variables)
    assert [layer.path for layer in layers] == [f"{b}/shift" for b in _expected_order()]
    for layer in layers:
        block = layer.path.split("/")[0]
        stage = int(block[len("layer")])
        assert layer.stage == stage and layer.axes == "thw"
        assert layer.shift.shape == (TINY_WIDTH[stage], 3)
        np.testing.assert_array_equal(layer.shift, variables["params"][block]["shift"]["shift"])


def test_network_order_is_numeric_not_lexicographic():
    shift = np.zeros((4, 3), np.float32)
    params = {f"layer3_block{b}": {"shift": {"shift": shift + b}} for b in (10, 2, 9)}
    layers = viz.collect_shifts({"params": params})
    assert [layer.path for layer in layers] == [f"layer3_block{b}/shift" for b in (2, 9, 10)]


def test_no_shift_layer_is_an_error(tmp_path):
    variables = {"params": {"dense": {"kernel": np.ones((3, 3)), "bias": np.ones(3)}}}
    assert viz.collect_shifts(variables) == []
    with pytest.raises(ValueError, match="no shift layer"):
        viz.write_all(variables, str(tmp_path))


def test_stage_stats_match_numpy(tiny):
    _, variables = tiny
    stats = viz.stage_stats(viz.collect_shifts(variables))
    assert list(stats) == [f"layer{s}" for s in TINY_BLOCKS] + ["all"]
    groups = {f"layer{s}": [f"layer{s}_block{b}" for b in range(n)] for s, n in TINY_BLOCKS.items()}
    groups["all"] = _expected_order()
    for name, blocks in groups.items():
        d = np.abs(np.concatenate([variables["params"][b]["shift"]["shift"] for b in blocks]))
        s = stats[name]
        assert s["layers"] == len(blocks) and s["channels"] == d.shape[0]
        for i, axis in enumerate(("dt", "dh", "dw")):
            assert s[f"mean_abs_{axis}"] == pytest.approx(d[:, i].mean(), rel=1e-6)
            assert s[f"median_abs_{axis}"] == pytest.approx(np.median(d[:, i]), rel=1e-6)
        assert s["frac_abs_dt_gt_0.5"] == pytest.approx(np.mean(d[:, 0] > 0.5))
    # Known values give distinct numbers: a mix-up of axes or stages would show.
    assert len({stats[n]["mean_abs_dh"] for n in groups}) == len(groups)


def test_change_stats_match_numpy(tiny):
    model, variables = tiny
    reference = _variables(model, seed=3)
    change = viz.change_stats(viz.collect_shifts(variables), viz.collect_shifts(reference))
    for name, blocks in (("layer3", [f"layer3_block{b}" for b in range(6)]),
                         ("all", _expected_order())):
        a, r = (np.concatenate([v["params"][b]["shift"]["shift"] for b in blocks]).astype(float)
                for v in (variables, reference))
        c = change[name]
        for i, axis in enumerate(("dt", "dh", "dw")):
            assert c[f"mean_abs_change_{axis}"] == pytest.approx(np.abs(a - r)[:, i].mean())
            assert c[f"max_abs_change_{axis}"] == pytest.approx(np.abs(a - r)[:, i].max())
            assert c[f"mean_change_abs_{axis}"] == pytest.approx(
                (np.abs(a) - np.abs(r))[:, i].mean(), rel=1e-9)
            assert c[f"frac_abs_{axis}_grew"] == pytest.approx(np.mean(np.abs(a[:, i]) >
                                                                       np.abs(r[:, i])))
        assert c["frac_dt_crossed_0.5"] == pytest.approx(
            np.mean((np.abs(a[:, 0]) > 0.5) != (np.abs(r[:, 0]) > 0.5)))
    same = viz.change_stats(viz.collect_shifts(variables), viz.collect_shifts(variables))
    assert same["all"]["max_abs_change_dt"] == 0 and same["all"]["frac_abs_dh_grew"] == 0
    with pytest.raises(ValueError, match="no reference layer"):
        viz.change_stats(viz.collect_shifts(variables), viz.collect_shifts(variables)[1:])


def test_aq_layers_temporal_from_winning_tap_spatial_apart(tiny_aq):
    _, variables = tiny_aq
    layers = {layer.path: layer for layer in viz.collect_shifts(variables)}
    order = [p for b in _expected_order() for p in (f"{b}/attention_shift", f"{b}/shift")]
    assert list(layers) == order
    params = variables["params"]
    for block in _expected_order():
        att = layers[f"{block}/attention_shift"]
        logits = params[block]["attention_shift"]["attention"]
        assert att.axes == "t"
        np.testing.assert_array_equal(att.shift[:, 0], np.argmax(logits, axis=1) - 1)
        np.testing.assert_array_equal(att.shift[:, 1:], 0)
        spatial = layers[f"{block}/shift"]
        assert spatial.axes == "hw"
        np.testing.assert_array_equal(spatial.shift[:, 0], 0)
        np.testing.assert_array_equal(spatial.shift[:, 1:], params[block]["shift"]["shift"])
    # The attention acts on the block's input channels, the spatial shift on conv1's output.
    assert layers["layer2_block0/attention_shift"].channels == 54
    assert layers["layer2_block0/shift"].channels == 108
    stats = viz.stage_stats(list(layers.values()))
    assert stats["layer2"]["channels_dt"] == 54 + 3 * 108  # the attention layers' C_in
    assert stats["layer2"]["channels_dh"] == stats["layer2"]["channels_dw"] == 4 * 108
    d = layers["layer0_block0/attention_shift"].shift[:, 0]
    assert stats["layer0"]["frac_abs_dt_gt_0.5"] == pytest.approx(np.mean(d != 0))
    assert stats["layer0"]["mean_abs_dt"] == pytest.approx(np.mean(np.abs(d)))


def test_aq_fractions_match_budget_stats_and_inference_form(tiny_aq):
    model, variables = tiny_aq
    fractions = viz.aq_fractions(variables)
    expected = budget_stats(variables)
    assert list(fractions) == [f"{b}/attention_shift" for b in _expected_order()]
    assert set(fractions) == set(expected)
    for path, f in fractions.items():
        assert f["expected"] == pytest.approx(float(expected[path]), rel=1e-6)
        assert f["temperature"] == pytest.approx(0.7)
        block = path.split("/")[0]
        logits = variables["params"][block]["attention_shift"]["attention"]
        assert f["hard"] == pytest.approx(np.mean(np.argmax(logits, axis=1) != 1))
    # The inference form stores the winning tap as `temporal_shift`: the same temporal shifts.
    _, deployed = to_inference(model, variables)
    trained_t = {x.path: x.shift for x in viz.collect_shifts(variables) if x.axes == "t"}
    deployed_t = {x.path: x.shift for x in viz.collect_shifts(deployed) if x.axes == "t"}
    assert set(trained_t) == set(deployed_t)
    for path in trained_t:
        np.testing.assert_array_equal(trained_t[path], deployed_t[path])
    assert all(f["expected"] is None for f in viz.aq_fractions(deployed).values())


def _is_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_all_writes_figures_and_summary(tiny, tmp_path):
    model, variables = tiny
    reference = _variables(model, seed=3)
    paths = viz.write_all(variables, str(tmp_path), reference=reference, title="tiny",
                          extra={"step": 7})
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["change.png", "histograms.png", "shifts_3d.png", "summary.json",
                     "temporal_fraction.png"]
    for p in paths:
        assert os.path.getsize(p) > 2000, p
        if p.endswith(".png"):
            assert _is_png(p)
    data = json.load(open(tmp_path / "summary.json"))
    assert data["step"] == 7 and "aq" not in data
    assert data["stages"] == json.loads(json.dumps(viz.stage_stats(viz.collect_shifts(variables))))
    assert data["reference"]["stages"]["all"]["mean_abs_dt"] == pytest.approx(
        viz.stage_stats(viz.collect_shifts(reference))["all"]["mean_abs_dt"])
    assert [r["path"] for r in data["layers"]] == [f"{b}/shift" for b in _expected_order()]
    assert data["change"]["all"]["max_abs_change_dw"] == pytest.approx(
        viz.change_stats(viz.collect_shifts(variables),
                         viz.collect_shifts(reference))["all"]["max_abs_change_dw"])


def test_write_all_aq_draws_the_budget(tiny_aq, tmp_path):
    _, variables = tiny_aq
    paths = viz.write_all(variables, str(tmp_path / "new"), budget=0.125)
    assert os.path.basename(paths[-2]) == "budget.png" and _is_png(paths[-2])
    data = json.load(open(tmp_path / "new" / "summary.json"))
    assert data["budget"] == 0.125
    assert data["mean_expected_shifted_fraction"] == pytest.approx(
        float(np.mean([float(v) for v in budget_stats(variables).values()])), rel=1e-6)


def test_scatter_splits_many_layers_over_files(tiny, tmp_path):
    _, variables = tiny
    paths = viz.plot_scatter(viz.collect_shifts(variables), str(tmp_path / "s"), per_figure=8)
    assert [os.path.basename(p) for p in paths] == ["s_1.png", "s_2.png", "s_3.png"]
    assert all(_is_png(p) for p in paths)


def test_library_imports_neither_train_nor_matplotlib():
    code = ("import sys, rubiks_jax.viz\n"
            "print(','.join(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('train', 'matplotlib', 'tensorflow'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
