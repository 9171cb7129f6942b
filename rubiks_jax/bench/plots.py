"""python -m rubiks_jax.bench.plots: the efficiency figures as PNG files.

- layer_level.png: multiply-adds and parameters of the 3D-conv, TSM and RubiksShift blocks split
  by layer (rubiks_jax.flops; the paper's layer-level comparison, docs/DESIGN.md, "Layers and
  models");
- block_latency.png: latency bars of the `block` suite, from its JSON (if given);
- model_speed.png: training and inference clips/s against GMACs per clip, from the `model` suite's
  JSON (if given).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

from rubiks_jax import flops
from rubiks_jax.layers.baselines import layer_blocks

BLOCK_LABELS = {"conv3d": "3D conv", "tsm": "TSM", "rubiks_shift": "RubiksShift"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def layer_costs(frames: int = 8, size: int = 112, channels: int = 72) -> dict:
    """{block: {layer: (macs, params)}} for one clip of (frames, size, size, channels)."""
    out = {}
    for name, block in layer_blocks(channels, impl="xla").items():
        per_layer = defaultdict(lambda: [0, 0])
        for r in flops.count(block, (1, frames, size, size, channels)):
            per_layer[r.path][0] += r.macs
            per_layer[r.path][1] += r.params
        out[name] = {k: tuple(v) for k, v in per_layer.items()}
    return out


def plot_layer_level(path: str, frames: int = 8, size: int = 112, channels: int = 72) -> None:
    plt = _pyplot()
    costs = layer_costs(frames, size, channels)
    layers = sorted({layer for c in costs.values() for layer in c})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, index, unit, scale in ((axes[0], 0, "GMACs", 1e9), (axes[1], 1, "parameters (K)", 1e3)):
        names = list(costs)
        bottom = [0.0] * len(names)
        for layer in layers:
            heights = [costs[n].get(layer, (0, 0))[index] / scale for n in names]
            if not any(heights):
                continue
            ax.bar([BLOCK_LABELS[n] for n in names], heights, bottom=bottom, label=layer,
                   color=f"C{layers.index(layer)}")  # one colour per layer in both panels
            bottom = [b + h for b, h in zip(bottom, heights)]
        ref = bottom[names.index("rubiks_shift")]
        for i, total in enumerate(bottom):
            ax.annotate(f"{total:.3g}\n({total / ref:.1f}x)", (i, total), ha="center", va="bottom",
                        fontsize=9)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(bottom) * 1.25)
        ax.legend(fontsize=8)
    fig.suptitle(f"Layer-level cost per clip, (T, H, W) = ({frames}, {size}, {size}), "
                 f"{channels} channels in and out")
    _save(fig, path)


def plot_block_latency(result: dict, path: str) -> None:
    plt = _pyplot()
    rows = result["rows"]
    groups = sorted({(r["dtype"], r["mode"]) for r in rows}, key=lambda k: (k[0] != "float32", k[1]))
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    by_key = {(r["dtype"], r["mode"], r["block"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(blocks)
    for b, name in enumerate(blocks):
        xs = [g + (b - (len(blocks) - 1) / 2) * width for g in range(len(groups))]
        ms = [by_key[(d, m, name)]["median_s"] * 1e3 for d, m in groups]
        lo = [v - by_key[(d, m, name)]["min_s"] * 1e3 for v, (d, m) in zip(ms, groups)]
        hi = [by_key[(d, m, name)]["max_s"] * 1e3 - v for v, (d, m) in zip(ms, groups)]
        ax.bar(xs, ms, width, yerr=[lo, hi], capsize=2, label=BLOCK_LABELS.get(name, name))
        for x, (d, m) in zip(xs, groups):
            ratio = by_key[(d, m, name)]["x_rubiks_shift"]
            ax.annotate(f"{ratio:.1f}x", (x, by_key[(d, m, name)]["max_s"] * 1e3),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), [f"{m}\n{d}" for d, m in groups])
    ax.set_ylabel("median latency (ms)")
    shape = tuple(rows[0]["shape"])
    ax.set_title(f"Block latency at (N, T, H, W, C) = {shape}; labels: time / RubiksShift block\n"
                 f"{result['machine']}", fontsize=9)
    ax.legend()
    _save(fig, path)


def plot_model_speed(result: dict, path: str) -> None:
    plt = _pyplot()
    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("train", "infer")):
        for r in (r for r in rows if r["mode"] == mode):
            ax.scatter(r["macs_per_clip"] / 1e9, r["clips_per_s"], s=40)
            ax.annotate(r["model"], (r["macs_per_clip"] / 1e9, r["clips_per_s"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("GMACs per clip")
        ax.set_ylabel("clips / s")
        ax.set_title(mode)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    r0 = rows[0]
    fig.suptitle(f"Model speed, batch {tuple(r0['shape'])} {r0['dtype']}; {result['machine']}",
                 fontsize=9)
    _save(fig, path)


def _load(path: str | None) -> dict | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise SystemExit(f"benchmark JSON not found: {path} (run python -m rubiks_jax.bench first)")
    with open(path) as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rubiks_jax.bench.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/figures", help="directory for the PNG files")
    parser.add_argument("--block", default=None, help="JSON of the block suite")
    parser.add_argument("--model", default=None, help="JSON of the model suite")
    parser.add_argument("--prefix", default="", help="prefix of the file names (e.g. cpu_, h100_)")
    args = parser.parse_args(argv)
    block, model = _load(args.block), _load(args.model)
    os.makedirs(args.out, exist_ok=True)
    written = [os.path.join(args.out, "layer_level.png")]
    plot_layer_level(written[0])
    if block is not None:
        written.append(os.path.join(args.out, f"{args.prefix}block_latency.png"))
        plot_block_latency(block, written[-1])
    if model is not None:
        written.append(os.path.join(args.out, f"{args.prefix}model_speed.png"))
        plot_model_speed(model, written[-1])
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
