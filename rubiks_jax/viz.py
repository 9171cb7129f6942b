"""What the shifts learned: every shift layer's per-channel (dt, dh, dw) read from a model's
variables, per-stage summaries and figures (the RubiksNet paper's Figure 6 style 3D scatter).

    layers = collect_shifts(variables)   # [ShiftLayer("layer0_block0/shift", 0, (C, 3), "thw"), ..]
    stats = stage_stats(layers)          # {"layer0": {"mean_abs_dt": ..., ...}, ..., "all": ...}
    paths = write_all(variables, out_dir, reference=init_variables, budget=0.125)

`variables` is a Flax variables dict as `model.init` returns it ({"params", "batch_stats", maybe
"temperature"}). Shifts are in frames (dt) and pixels of the layer's input (dh, dw); a positive dt
reads the next frame (rubiks_jax.ops.rubiks_shift). RubiksNet-Q's forward uses round(d): the raw,
fractional learned values are shown.

RubiksNet-AQ has two shift layers per block, on different channels: the AttentionShift
(`.../attention_shift`, temporal only, on the block's C_in channels before conv1) and the spatial
RubiksShift (`.../shift`, (dh, dw), on conv1's C_out channels). conv1 mixes channels in between, so
the two are reported as separate layers and never paired channel by channel: the attention layer's
dt is the winning tap (-1, 0, +1), as in the inference form (rubiks_jax.models.deploy), with dh = dw
= 0; the spatial layer's dt is 0.

matplotlib is imported only by the plotting functions (Agg backend, files only).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
from flax.traverse_util import flatten_dict

from rubiks_jax.layers.shift import TEMPERATURE_COLLECTION, hard_temporal_shift
from rubiks_jax.models.budget import budget_stats

AXIS_NAMES = ("dt", "dh", "dw")
THRESHOLD = 0.5  # |dt| above it: the channel reads mostly another frame (round(dt) != 0)
_STAGE = re.compile(r"^layer(\d+)_block(\d+)/")


@dataclasses.dataclass(frozen=True)
class ShiftLayer:
    """One shift layer's learned shift.

    Attributes:
      path: module path, e.g. "layer2_block1/shift" or "layer2_block1/attention_shift".
      stage: the N of "layerN_blockB" (0 = the stem's block), None outside that naming.
      shift: (C, 3) float64, columns (dt, dh, dw), frames / pixels.
      axes: the learned columns: "thw" (RubiksShift), "hw" (spatial RubiksShift: dt held at 0) or
        "t" (AttentionShift: dt = the winning tap, dh = dw = 0).
    """

    path: str
    stage: int | None
    shift: np.ndarray
    axes: str

    @property
    def channels(self) -> int:
        return self.shift.shape[0]


def _natural_key(path: str) -> list:
    # Network order from the names: layer3_block10 after layer3_block9 (a restored checkpoint's
    # tree is sorted as strings); "attention_shift" sorts before "shift", as it runs first.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _stage(path: str) -> int | None:
    m = _STAGE.match(path + "/")
    return int(m.group(1)) if m else None


def collect_shifts(variables: Mapping) -> list[ShiftLayer]:
    """Every shift layer of `variables`, in network order (empty for a model without shifts)."""
    params = flatten_dict(variables["params"], sep="/")
    layers = []
    for path, value in params.items():
        module, _, leaf = path.rpartition("/")
        value = np.asarray(value, np.float64)
        if leaf == "shift" and value.ndim == 2 and value.shape[1] in (2, 3):
            if value.shape[1] == 3:
                shift, axes = value, "thw"
            else:
                shift, axes = np.concatenate([np.zeros_like(value[:, :1]), value], axis=1), "hw"
        elif leaf == "attention" and value.ndim == 2 and value.shape[1] == 3:
            dt = np.asarray(hard_temporal_shift(value), np.float64)
            shift, axes = np.stack([dt, np.zeros_like(dt), np.zeros_like(dt)], axis=1), "t"
        elif leaf == "temporal_shift" and value.ndim == 1:  # AQ in its inference form
            shift, axes = np.stack([value, np.zeros_like(value), np.zeros_like(value)], 1), "t"
        else:
            continue
        layers.append(ShiftLayer(module, _stage(module), shift, axes))
    return sorted(layers, key=lambda layer: _natural_key(layer.path))


def _abs_stats(layers: Sequence[ShiftLayer]) -> dict[str, float | int | None]:
    """Channel-pooled |dt|, |dh|, |dw| statistics of `layers`; an axis no layer learns is None."""
    out: dict[str, float | int | None] = {
        "layers": len(layers), "channels": int(sum(layer.channels for layer in layers))}
    for i, name in enumerate(AXIS_NAMES):
        values = [np.abs(layer.shift[:, i]) for layer in layers if name[1] in layer.axes]
        v = np.concatenate(values) if values else None
        out[f"channels_{name}"] = 0 if v is None else int(v.size)
        out[f"mean_abs_{name}"] = None if v is None else float(np.mean(v))
        out[f"median_abs_{name}"] = None if v is None else float(np.median(v))
        if name == "dt":
            out["frac_abs_dt_gt_0.5"] = None if v is None else float(np.mean(v > THRESHOLD))
    return out


def layer_stats(layers: Sequence[ShiftLayer]) -> list[dict]:
    """Per layer: path, stage, axes and the statistics of `stage_stats` over its channels."""
    return [{"path": layer.path, "stage": layer.stage, "axes": layer.axes, **_abs_stats([layer])}
            for layer in layers]


def _stage_name(stage: int | None) -> str:
    return "other" if stage is None else f"layer{stage}"


def stage_stats(layers: Sequence[ShiftLayer]) -> dict[str, dict]:
    """{"layer0": ..., "layer1": ..., "all": ...}: over the channels of the stage's layers, the mean
    and median of |dt|, |dh|, |dw| (only over layers that learn that axis; None if none does), the
    fraction of channels with |dt| > 0.5, the layer and channel counts ("channels": all the
    stage's shift layers; "channels_dt" ...: those that learn the axis, which differ for AQ)."""
    groups: dict[str, list[ShiftLayer]] = {}
    for layer in layers:
        groups.setdefault(_stage_name(layer.stage), []).append(layer)
    out = {name: _abs_stats(group) for name, group in groups.items()}
    out["all"] = _abs_stats(layers)
    return out


def _pairs(layers: Sequence[ShiftLayer], reference: Sequence[ShiftLayer]
           ) -> list[tuple[ShiftLayer, ShiftLayer]]:
    ref = {layer.path: layer for layer in reference}
    pairs = []
    for layer in layers:
        r = ref.get(layer.path)
        if r is None or r.shift.shape != layer.shift.shape:
            raise ValueError(f"{layer.path}: no reference layer of shape {layer.shift.shape}")
        pairs.append((layer, r))
    return pairs


def _change(pairs: Sequence[tuple[ShiftLayer, ShiftLayer]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for i, name in enumerate(AXIS_NAMES):
        sel = [(a.shift[:, i], b.shift[:, i]) for a, b in pairs if name[1] in a.axes]
        if not sel:
            out.update({f"mean_abs_change_{name}": None, f"max_abs_change_{name}": None,
                        f"mean_change_abs_{name}": None, f"frac_abs_{name}_grew": None})
            continue
        a, b = (np.concatenate(v) for v in zip(*sel))
        out[f"mean_abs_change_{name}"] = float(np.mean(np.abs(a - b)))
        out[f"max_abs_change_{name}"] = float(np.max(np.abs(a - b)))
        out[f"mean_change_abs_{name}"] = float(np.mean(np.abs(a) - np.abs(b)))
        out[f"frac_abs_{name}_grew"] = float(np.mean(np.abs(a) > np.abs(b)))
        if name == "dt":
            out["frac_dt_crossed_0.5"] = float(np.mean((np.abs(a) > THRESHOLD)
                                                       != (np.abs(b) > THRESHOLD)))
    return out


def change_stats(layers: Sequence[ShiftLayer], reference: Sequence[ShiftLayer]
                 ) -> dict[str, dict]:
    """How far the shifts moved from `reference` (e.g. the initialisation), per stage and "all":
    per axis the mean and max |d - d_ref|, the mean change of |d| (> 0: shifts grew), the fraction
    of channels whose |d| grew, and for dt the fraction that crossed |dt| = 0.5. A ValueError if a
    layer has no reference of the same path and shape."""
    pairs = _pairs(layers, reference)
    groups: dict[str, list] = {}
    for pair in pairs:
        groups.setdefault(_stage_name(pair[0].stage), []).append(pair)
    out = {name: _change(group) for name, group in groups.items()}
    out["all"] = _change(pairs)
    return out


def aq_fractions(variables: Mapping) -> dict[str, dict[str, float | None]]:
    """Per AttentionShift layer ("layer2_block0/attention_shift"): "expected", the expected
    fraction of channels shifted in time at the layer's temperature (budget_stats, what the
    budget loss constrains; None without a temperature collection), "hard", the fraction whose
    winning tap is not 0 (what the inference form shifts), and "temperature"."""
    hard = {layer.path: float(np.mean(layer.shift[:, 0] != 0))
            for layer in collect_shifts(variables) if layer.axes == "t"}
    has_temperature = bool(variables.get(TEMPERATURE_COLLECTION))
    expected = budget_stats(variables) if has_temperature else {}
    temps = flatten_dict(variables.get(TEMPERATURE_COLLECTION, {}), sep="/")
    return {path: {"expected": float(expected[path]) if path in expected else None,
                   "hard": h,
                   "temperature": float(temps[f"{path}/temperature"])
                   if f"{path}/temperature" in temps else None}
            for path, h in sorted(hard.items(), key=lambda kv: _natural_key(kv[0]))}


def summary(variables: Mapping, *, reference: Mapping | None = None,
            budget: float | None = None) -> dict:
    """Plain-dict summary: per-stage and per-layer statistics, AQ fractions (if any) with the
    budget, and the same for `reference` (e.g. the initialisation) under "reference", with the
    change from it (`change_stats`) under "change"."""
    layers = collect_shifts(variables)
    out = {"stages": stage_stats(layers), "layers": layer_stats(layers)}
    fractions = aq_fractions(variables)
    if fractions:
        out["aq"] = fractions
        expected = [f["expected"] for f in fractions.values() if f["expected"] is not None]
        out["mean_expected_shifted_fraction"] = float(np.mean(expected)) if expected else None
        out["budget"] = budget
    if reference is not None:
        out["reference"] = summary(reference, budget=budget)
        out["change"] = change_stats(layers, collect_shifts(reference))
    return out


def write_summary(data: dict, path: str) -> str:
    """Writes `data` (from `summary`) as indented JSON; returns the path."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


# ------------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, dpi: int) -> str:
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def _color(stage: int | None) -> str:
    return "C7" if stage is None else f"C{stage % 10}"


def plot_scatter(layers: Sequence[ShiftLayer], prefix: str, *, per_figure: int = 24,
                 cols: int = 6, title: str = "", dpi: int = 100) -> list[str]:
    """One subplot per RubiksShift layer, each channel a point: at (dt, dh, dw) in 3D where dt is
    learned, at (dh, dw) in 2D for spatial-only layers (AttentionShift layers have no spatial
    shift and are left out). Axis limits are shared, so layers compare. Writes PREFIX.png, or
    PREFIX_1.png, PREFIX_2.png, ... for more than `per_figure` layers; returns the paths."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator

    layers = [layer for layer in layers if "h" in layer.axes]
    if not layers:
        return []
    lim = max(1.0, float(max(np.abs(layer.shift).max() for layer in layers))) * 1.05
    tick = max(t * 10.0 ** math.floor(math.log10(lim)) for t in (1, 2, 5)
               if t * 10.0 ** math.floor(math.log10(lim)) <= lim)
    chunks = [layers[i:i + per_figure] for i in range(0, len(layers), per_figure)]
    paths = []
    for k, chunk in enumerate(chunks, start=1):
        rows = math.ceil(len(chunk) / cols)
        fig = plt.figure(figsize=(2.2 * cols, 2.3 * rows + 0.4))
        for i, layer in enumerate(chunk):
            d = layer.shift
            if layer.axes == "thw":
                ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
                ax.scatter(d[:, 0], d[:, 1], d[:, 2], s=2, color=_color(layer.stage),
                           depthshade=False)
                ax.set_zlim(-lim, lim)
                for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # few grid lines: smaller PNGs
                    axis.set_major_locator(FixedLocator([-tick, 0.0, tick]))
                ax.set_xlabel("dt", fontsize=7, labelpad=-10)
                ax.set_ylabel("dh", fontsize=7, labelpad=-10)
                ax.set_zlabel("dw", fontsize=7, labelpad=-10)
                ax.tick_params(labelsize=5, pad=-3)
            else:
                ax = fig.add_subplot(rows, cols, i + 1)
                ax.scatter(d[:, 1], d[:, 2], s=3, alpha=0.6, color=_color(layer.stage))
                ax.set_xlabel("dh", fontsize=7)
                ax.set_ylabel("dw", fontsize=7)
                ax.set_aspect("equal")
                ax.tick_params(labelsize=6)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_title(f"{layer.path.rsplit('/', 1)[0]} ({layer.channels} ch)", fontsize=8)
        suffix = f" ({k}/{len(chunks)})" if len(chunks) > 1 else ""
        fig.suptitle(f"{title}{suffix}: learned shift per channel (frames, pixels)".lstrip(": "),
                     fontsize=10)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.9, wspace=0.25, hspace=0.35)
        path = f"{prefix}.png" if len(chunks) == 1 else f"{prefix}_{k}.png"
        paths.append(_save(fig, path, dpi))
    return paths


def _by_stage(layers: Sequence[ShiftLayer]) -> dict[str, list[ShiftLayer]]:
    out: dict[str, list[ShiftLayer]] = {}
    for layer in layers:
        out.setdefault(_stage_name(layer.stage), []).append(layer)
    return out


def _abs_values(layers: Sequence[ShiftLayer], axis: int) -> np.ndarray | None:
    values = [np.abs(layer.shift[:, axis]) for layer in layers
              if AXIS_NAMES[axis][1] in layer.axes]
    return np.concatenate(values) if values else None


def plot_histograms(layers: Sequence[ShiftLayer], path: str, *,
                    reference: Sequence[ShiftLayer] | None = None, title: str = "",
                    dpi: int = 100) -> str:
    """Per stage (rows) histograms of |dt|, |dh|, |dw| (columns) over the channels of the layers
    that learn the axis; `reference` (e.g. the initialisation) as a black outline."""
    plt = _pyplot()
    stages = _by_stage(layers)
    ref = _by_stage(reference) if reference is not None else {}
    fig, axes = plt.subplots(len(stages), 3, figsize=(9, 1.6 * len(stages) + 0.8), squeeze=False)
    for j in range(3):
        values = [v for group in list(stages.values()) + list(ref.values())
                  if (v := _abs_values(group, j)) is not None]
        top = max([float(v.max()) for v in values] + [1.0])
        bins = np.linspace(0.0, top, 31)
        for i, (name, group) in enumerate(stages.items()):
            ax = axes[i, j]
            v = _abs_values(group, j)
            if v is None:
                ax.text(0.5, 0.5, "not learned", ha="center", va="center", transform=ax.transAxes,
                        fontsize=8, color="grey")
            else:
                ax.hist(v, bins=bins, color=_color(group[0].stage), alpha=0.8, label="learned")
                r = _abs_values(ref.get(name, []), j)
                if r is not None:
                    ax.hist(r, bins=bins, histtype="step", color="k", label="init")
            if j == 0:
                ax.axvline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
                ax.set_ylabel(f"{name}\nchannels", fontsize=8)
            if i == 0:
                ax.set_title(f"|{AXIS_NAMES[j]}|", fontsize=9)
            if i == 0 and j == 0 and reference is not None:
                ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)
        axes[-1, j].set_xlabel("frames" if j == 0 else "pixels", fontsize=8)
    fig.suptitle(f"{title}: |shift| per stage".lstrip(": "), fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_temporal_fraction(layers: Sequence[ShiftLayer], path: str, *,
                           reference: Sequence[ShiftLayer] | None = None, title: str = "",
                           dpi: int = 100) -> str:
    """Left: per stage, the fraction of channels with |dt| > 0.5 (learned; `reference` beside it).
    Right: per layer in network order, mean |dt|, |dh|, |dw| (reference dashed)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6),
                                      gridspec_kw={"width_ratios": [1, 2]})
    stats = stage_stats(layers)
    names = [n for n in stats if n != "all"]
    ref_stats = stage_stats(reference) if reference is not None else {}
    x = np.arange(len(names))
    width = 0.4 if reference is not None else 0.7
    key = "frac_abs_dt_gt_0.5"
    learned = [stats[n][key] or 0.0 for n in names]
    left.bar(x, learned, width, color=[_color(_stage_of(n)) for n in names], label="learned")
    for xi, v in zip(x, learned):
        left.annotate(f"{v:.2f}", (xi, v), ha="center", va="bottom", fontsize=7)
    if reference is not None:
        left.bar(x + width, [(ref_stats.get(n) or {}).get(key) or 0.0 for n in names], width,
                 color="none", edgecolor="k", label="init")
        left.legend(fontsize=7)
    left.set_xticks(x + (width / 2 if reference is not None else 0), names, fontsize=8)
    left.set_ylim(0, 1.05)
    left.set_ylabel("fraction of channels, |dt| > 0.5", fontsize=8)
    left.set_title("channels shifted in time, per stage", fontsize=9)

    def profile(group, style, label_suffix):
        rows = layer_stats(group)
        for i, name in enumerate(AXIS_NAMES):
            ys = [r[f"mean_abs_{name}"] for r in rows]
            xs = [k for k, y in enumerate(ys) if y is not None]
            if xs:
                right.plot(xs, [ys[k] for k in xs], style, color=f"C{i}", marker=".",
                           label=f"mean |{name}|{label_suffix}")

    profile(layers, "-", "")
    if reference is not None:
        profile(reference, "--", " (init)")
    # "layer2.1" for layer2_block1's shift, "layer2.1 att" for its AttentionShift (AQ).
    right.set_xticks(range(len(layers)),
                     [layer.path.split("/")[0].replace("_block", ".")
                      + (" att" if layer.axes == "t" else "") for layer in layers],
                     rotation=90, fontsize=6)
    right.set_ylabel("frames / pixels", fontsize=8)
    right.set_title("mean |shift| per layer (network order)", fontsize=9)
    right.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _stage_of(name: str) -> int | None:
    return int(name[len("layer"):]) if name.startswith("layer") else None


def plot_budget(fractions: Mapping[str, Mapping[str, float | None]], path: str, *,
                budget: float | None = None,
                reference: Mapping[str, Mapping[str, float | None]] | None = None,
                title: str = "", dpi: int = 100) -> str:
    """RubiksNet-AQ: per AttentionShift layer, the expected shifted fraction (at the layer's
    temperature; the budget loss's B averages it over layers) and the hard fraction (winning tap
    not 0), the budget as a horizontal line, the reference's (init) expected fraction as marks."""
    plt = _pyplot()
    names = list(fractions)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 3.6))
    expected = [fractions[n]["expected"] for n in names]
    ax.bar(x - 0.2, [e or 0.0 for e in expected], 0.4, color="C0",
           label="expected (soft attention, training temperature)")
    ax.bar(x + 0.2, [fractions[n]["hard"] for n in names], 0.4, color="C1",
           label="hard (argmax tap != 0, inference form)")
    if reference is not None:
        ax.plot(x - 0.2, [(reference.get(n) or {}).get("expected") or np.nan for n in names], "k_",
                markersize=8, label="expected at init")
    if budget is not None:
        ax.axhline(budget, color="r", linestyle="--", linewidth=1, label=f"budget {budget:g}")
    known = [e for e in expected if e is not None]
    if known:
        ax.axhline(float(np.mean(known)), color="C0", linestyle=":", linewidth=1,
                   label=f"mean expected {np.mean(known):.3f}")
    ax.set_xticks(x, [n.split("/")[0].replace("_block", ".") for n in names], rotation=90,
                  fontsize=7)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("fraction of channels shifted in time", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{title}: temporal attention shift against the budget".lstrip(": "),
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_change(layers: Sequence[ShiftLayer], reference: Sequence[ShiftLayer], path: str, *,
                title: str = "", dpi: int = 100) -> str:
    """Per axis, each channel's change d - d_ref against its reference value d_ref, coloured by
    stage: points rising to the right (change with the sign of d_ref) are shifts that grew."""
    plt = _pyplot()
    pairs = _pairs(layers, reference)
    grew = change_stats(layers, reference)["all"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for i, (ax, name) in enumerate(zip(axes, AXIS_NAMES)):
        shown = set()
        for a, b in pairs:
            if name[1] not in a.axes:
                continue
            label = _stage_name(a.stage)
            ax.scatter(b.shift[:, i], a.shift[:, i] - b.shift[:, i], s=2, alpha=0.5,
                       color=_color(a.stage), label=None if label in shown else label)
            shown.add(label)
        ax.axhline(0, color="k", linewidth=0.5)
        frac = grew[f"frac_abs_{name}_grew"]
        ax.set_title(f"{name}: |{name}| grew in {frac:.0%} of channels" if frac is not None
                     else f"{name}: not learned", fontsize=9)
        ax.set_xlabel(f"{name} at init", fontsize=8)
        ax.set_ylabel("learned - init", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, markerscale=3)
    fig.suptitle(f"{title}: change of each channel's shift from the initialisation".lstrip(": "),
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)


def write_all(variables: Mapping, out_dir: str, *, reference: Mapping | None = None,
              budget: float | None = None, title: str = "", extra: Mapping | None = None,
              dpi: int = 100) -> list[str]:
    """Writes into `out_dir` (created if missing): shifts_3d[_k].png (scatter), histograms.png,
    temporal_fraction.png, change.png (with a reference), budget.png (AQ models only) and
    summary.json (`summary`, plus `extra` such as the run's step). `reference` (e.g. the
    initialisation) is drawn beside the learned values. Returns the paths written; a ValueError if
    the model has no shift layer."""
    layers = collect_shifts(variables)
    if not layers:
        raise ValueError("no shift layer in these variables (no RubiksShift or AttentionShift)")
    ref_layers = collect_shifts(reference) if reference is not None else None
    os.makedirs(out_dir, exist_ok=True)
    paths = plot_scatter(layers, os.path.join(out_dir, "shifts_3d"), title=title, dpi=dpi)
    paths.append(plot_histograms(layers, os.path.join(out_dir, "histograms.png"),
                                 reference=ref_layers, title=title, dpi=dpi))
    paths.append(plot_temporal_fraction(layers, os.path.join(out_dir, "temporal_fraction.png"),
                                        reference=ref_layers, title=title, dpi=dpi))
    if ref_layers is not None:
        paths.append(plot_change(layers, ref_layers, os.path.join(out_dir, "change.png"),
                                 title=title, dpi=dpi))
    data = summary(variables, reference=reference, budget=budget)
    if "aq" in data:
        paths.append(plot_budget(data["aq"], os.path.join(out_dir, "budget.png"), budget=budget,
                                 reference=(data.get("reference") or {}).get("aq"), title=title,
                                 dpi=dpi))
    paths.append(write_summary({**dict(extra or {}), **data},
                               os.path.join(out_dir, "summary.json")))
    return paths
