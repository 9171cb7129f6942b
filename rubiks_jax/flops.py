"""Parameter and multiply-add (MAC) accounting per layer and per stage, for any Flax model here.

Convention (TSM / RubiksNet papers: "FLOPs" are multiply-adds):
- Conv: output positions x kernel volume x Cin/groups x Cout; Dense: output rows x in x out.
- Interpolated shift (RubiksShift, fractional): 8 multiply-adds per output element, one per
  trilinear corner. Integer shifts (quantized, deployed, TSM's fixed shift) count zero.
- Soft AttentionShift: 3 multiply-adds per output element (3 weighted frames); hard: zero.
- BatchNorm, ReLU, pooling, the SE gating product and additions count zero (BatchNorm folds into
  the convolutions at inference). Their parameters are counted.
Counts are for one clip (batch 1) of the given input shape.

CLI: python -m rubiks_jax.flops --model rubiksnet --tier large --num-classes 174 --frames 8
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rubiks_jax.layers.shift import AttentionShift, RubiksShift


@dataclasses.dataclass
class LayerCost:
    path: str    # module path, e.g. "layer2_block0/conv1"
    kind: str    # conv, dense, shift, integer_shift, attention_shift, batch_norm
    macs: int    # multiply-adds for one clip
    params: int

    @property
    def stage(self) -> str:
        top = self.path.split("/")[0]
        m = re.match(r"(layer\d+)_block\d+", top)
        return m.group(1) if m else top


def _param_count(module: nn.Module) -> int:
    params = module.variables.get("params", {})
    return sum(int(math.prod(v.shape)) for v in jax.tree_util.tree_leaves(params))


def _cost(module: nn.Module, args: tuple, out) -> tuple[str, int] | None:
    if isinstance(module, nn.Conv):
        x = args[0]
        kernel = math.prod(module.kernel_size)
        positions = math.prod(out.shape[:-1])
        return "conv", positions * kernel * (x.shape[-1] // module.feature_group_count) * out.shape[-1]
    if isinstance(module, nn.Dense):
        return "dense", math.prod(out.shape[:-1]) * args[0].shape[-1] * out.shape[-1]
    if isinstance(module, RubiksShift):
        if module.quantize or module.integer:
            return "integer_shift", 0
        return "shift", 8 * math.prod(out.shape)
    if isinstance(module, AttentionShift):
        if module.hard or module.deployed:
            return "integer_shift", 0
        return "attention_shift", 3 * math.prod(out.shape)
    if isinstance(module, nn.BatchNorm):
        return "batch_norm", 0
    return None


def count(model: nn.Module, input_shape: Sequence[int], **call_kwargs) -> list[LayerCost]:
    """Per-layer costs of `model` on one input of `input_shape` (batch axis included; use 1).

    Runs `model.init` abstractly (no FLOPs spent, no memory for activations)."""
    records: list[LayerCost] = []

    def interceptor(next_fun: Callable, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            cost = _cost(context.module, args, out)
            if cost is not None:
                kind, macs = cost
                records.append(LayerCost("/".join(context.module.path), kind, int(macs),
                                         _param_count(context.module)))
        return out

    def init(x):
        with nn.intercept_methods(interceptor):
            return model.init(jax.random.PRNGKey(0), x, **call_kwargs)

    jax.eval_shape(init, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
    return records


def totals(records: Sequence[LayerCost]) -> tuple[int, int]:
    return sum(r.macs for r in records), sum(r.params for r in records)


def by_stage(records: Sequence[LayerCost]) -> dict[str, tuple[int, int]]:
    stages: dict[str, tuple[int, int]] = {}
    for r in records:
        macs, params = stages.get(r.stage, (0, 0))
        stages[r.stage] = (macs + r.macs, params + r.params)
    return stages


def xla_flops(model: nn.Module, variables, input_shape: Sequence[int], **call_kwargs) -> float:
    """FLOPs that XLA's cost analysis assigns to the jitted forward (2 per multiply-add, plus the
    elementwise work this module's convention leaves out)."""
    fn = jax.jit(lambda v, x: model.apply(v, x, **call_kwargs))
    compiled = fn.lower(variables, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis["flops"])


def format_table(records: Sequence[LayerCost], title: str) -> str:
    lines = [title, f"{'stage':16s} {'GMACs':>10s} {'params (M)':>12s}"]
    for stage, (macs, params) in by_stage(records).items():
        lines.append(f"{stage:16s} {macs / 1e9:10.4f} {params / 1e6:12.4f}")
    macs, params = totals(records)
    lines.append(f"{'total':16s} {macs / 1e9:10.4f} {params / 1e6:12.4f}")
    return "\n".join(lines)


def build_model(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...], str]:
    """The CLI's model (rubiks_jax.models registry, pure-XLA shift op), input shape and title."""
    from rubiks_jax.models import create_model

    shape = (1, args.frames, args.size, args.size, 3)
    model = create_model(args.model, args.num_classes, num_frames=args.frames, tier=args.tier,
                         variant=args.variant, hard_attention=args.hard_attention,
                         depth=args.depth, impl="xla")
    if args.model == "rubiksnet":
        name = f"RubiksNet-{args.tier} ({args.variant})"
    else:
        name = f"TSM-ResNet{args.depth}"
    return model, shape, f"{name}, {args.num_classes} classes, input {shape[1:]}"


def layer_level_table(frames: int = 8, size: int = 112, channels: int = 72) -> str:
    """The paper's layer-level comparison: the three blocks at equal channels (docs/DESIGN.md,
    "Published figures")."""
    from rubiks_jax.layers.baselines import layer_blocks

    rows = {}
    for name, block in layer_blocks(channels, impl="xla").items():
        rows[name] = totals(count(block, (1, frames, size, size, channels)))
    ref_macs, ref_params = rows["rubiks_shift"]
    lines = [f"Layer-level comparison at (T, H, W) = ({frames}, {size}, {size}), {channels} channels "
             "in and out",
             f"{'block':14s} {'GMACs':>9s} {'params':>9s} {'MACs / rubiks':>14s} "
             f"{'params / rubiks':>16s}"]
    for name, (macs, params) in rows.items():
        lines.append(f"{name:14s} {macs / 1e9:9.3f} {params:9d} {macs / ref_macs:13.1f}x "
                     f"{params / ref_params:15.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rubiks_jax.flops", description=__doc__)
    parser.add_argument("--model", choices=["rubiksnet", "tsm", "blocks"], default="rubiksnet")
    parser.add_argument("--tier", default="large", choices=["tiny", "small", "medium", "large"])
    parser.add_argument("--variant", default="rubiks3d",
                        choices=["rubiks3d", "rubiks3d_q", "rubiks3d_aq"])
    parser.add_argument("--hard-attention", action="store_true", help="AQ at inference")
    parser.add_argument("--depth", type=int, default=50, choices=[18, 50])
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", action="store_true", help="also print every layer")
    args = parser.parse_args(argv)
    if args.model == "blocks":
        print(layer_level_table(args.frames, 112 if args.size == 224 else args.size))
        return
    model, shape, title = build_model(args)
    records = count(model, shape)
    if args.layers:
        for r in records:
            print(f"{r.path:40s} {r.kind:16s} {r.macs / 1e6:12.3f} MMACs {r.params:10d} params")
    print(format_table(records, title))


if __name__ == "__main__":
    main()
