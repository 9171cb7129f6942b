"""The published RubiksNet checkpoints (the official PyTorch `.pth.tar` files) as a `RubiksNet` and
its variables.

    model, variables = from_official("ssv2_large.pth.tar")   # needs torch: the "convert" extra
    logits = model.apply(variables, x, train=False)           # x: (N, T, H, W, 3) -> (N, classes)

The file's layout and the key mapping: docs/DESIGN.md, "Published checkpoints". A training workdir
(for train.evaluate, train.predict and init_from) is written by `python -m train.convert`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rubiks_jax.models.rubiksnet import TIERS, RubiksNet

# The release's variant names -> ours. It has no quantized variant.
VARIANTS = {"rubiks3d": "rubiks3d", "rubiks3d-aq": "rubiks3d_aq"}
# The fields of a `.pth.tar`; "model" is the network's state_dict.
FIELDS = ("tier", "num_classes", "num_frames", "variant", "model")

_BLOCK = re.compile(r"layer(\d+)_block(\d+)")
# Our top-level modules -> the release's.
_TOP_MODULES = {"stem": "backbone.conv1", "bn_final": "backbone.bn_last", "classifier": "new_fc"}
# Our modules inside a block -> the release's, below the prefix backbone.layer{S}.{I}. Our conv1
# and conv2 are its conv2 and conv3; AQ wraps its conv2 into Sequential(AttentionShift, Conv2d).
_BLOCK_MODULES = {"bn1": "bn1", "bn2": "bn2", "conv2": "conv3", "shortcut": "shortcut",
                  "se/reduce": "se.fc.0", "se/expand": "se.fc.2"}
_BLOCK_MODULES_3D = {"conv1": "conv2", "shift": "as3.rubiks3d"}
_BLOCK_MODULES_AQ = {"conv1": "conv2.1", "shift": "as3", "attention_shift": "conv2.0"}
# (our collection, our leaf) -> the release's tensor name.
_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias",
           ("params", "scale"): "weight", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var", ("params", "shift"): "shift",
           ("params", "attention"): "weight", ("temperature", "temperature"): "T"}
# Axis permutations from the release's layout to ours, by our leaf name and rank: convolutions
# OIHW -> HWIO, Linear (out, in) -> (in, out), shifts (3 | 2, C) -> (C, 3 | 2). Others keep theirs.
_PERMUTATIONS = {("kernel", 4): (2, 3, 1, 0), ("kernel", 2): (1, 0), ("shift", 2): (1, 0)}


def official_key(path: tuple[str, ...], aq: bool) -> str:
    """The release's state_dict key of our variable `path` (collection, module..., leaf), e.g.
    ("params", "layer1_block0", "conv1", "kernel") -> "backbone.layer1.0.conv2.weight"."""
    collection, top, *inner, leaf = path
    block = _BLOCK.fullmatch(top)
    if block:
        modules = {**_BLOCK_MODULES, **(_BLOCK_MODULES_AQ if aq else _BLOCK_MODULES_3D)}
        module = f"backbone.layer{block[1]}.{block[2]}." + modules["/".join(inner)]
    else:
        module = _TOP_MODULES["/".join([top, *inner])]
    return f"{module}.{_LEAVES[(collection, leaf)]}"


def _convert(key: str, value: Any, leaf: str, shape: tuple[int, ...]) -> jax.Array:
    """One tensor of the release in our layout, as float32 of `shape` (ours)."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"checkpoint key {key!r}: expected a floating-point tensor, got "
                         f"{array.dtype}")
    perm = _PERMUTATIONS.get((leaf, len(shape)))
    expected = shape if perm is None else tuple(shape[perm.index(i)] for i in range(len(shape)))
    if array.shape != expected:
        raise ValueError(f"checkpoint key {key!r} has shape {tuple(array.shape)}, the model "
                         f"needs {expected}")
    if perm is not None:
        array = np.transpose(array, perm)
    return jnp.asarray(array, jnp.float32)


def convert_state_dict(state_dict: Mapping[str, Any], tier: str, num_classes: int,
                       num_frames: int = 8, variant: str = "rubiks3d"
                       ) -> tuple[RubiksNet, dict[str, Any]]:
    """The release's `state_dict` (key -> array-like in PyTorch layout) as our model and variables.

    Args:
      state_dict: every key of the release's network; `num_batches_tracked` counters are accepted
        and ignored (inference does not use them).
      tier, num_classes, num_frames: as the `.pth.tar` records them.
      variant: the release's name, "rubiks3d" or "rubiks3d-aq".
    Returns:
      (RubiksNet, variables): "params", "batch_stats" and, for AQ, "temperature" (the release's
      AttentionShift `T`), float32; the model takes (N, num_frames, H, W, 3).
    Raises:
      ValueError naming the key for a missing or unknown key, a wrong shape or a non-float tensor;
      for an unsupported tier or variant.
    """
    if tier not in TIERS:
        raise ValueError(f"unsupported tier {tier!r}; the published tiers are {sorted(TIERS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unsupported variant {variant!r}; the published variants are "
                         f"{sorted(VARIANTS)}")
    model = RubiksNet(tier, num_classes, num_frames=num_frames, variant=VARIANTS[variant])
    # Shapes only (no weights computed); variable shapes do not depend on the spatial size.
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                              jnp.zeros((1, num_frames, 1, 1, 3), jnp.float32))
    shapes = traverse_util.flatten_dict(abstract)
    paths = {official_key(path, variant == "rubiks3d-aq"): path for path in shapes}
    norms = {key.removesuffix(".running_mean") for key in paths if key.endswith(".running_mean")}
    unknown = [key for key in state_dict if key not in paths and not (
        key.endswith(".num_batches_tracked") and key.removesuffix(".num_batches_tracked") in norms)]
    if unknown:
        raise ValueError(f"unknown checkpoint key {unknown[0]!r} (RubiksNet-{tier} {variant} has "
                         f"no such tensor; {len(unknown)} unknown: {unknown[:5]})")
    missing = [key for key in paths if key not in state_dict]
    if missing:
        raise ValueError(f"checkpoint key {missing[0]!r} is missing (RubiksNet-{tier} {variant} "
                         f"needs it; {len(missing)} missing: {missing[:5]})")
    flat = {path: _convert(key, state_dict[key], path[-1], shapes[path].shape)
            for key, path in paths.items()}
    return model, traverse_util.unflatten_dict(flat)


def from_official(path: str | os.PathLike) -> tuple[RubiksNet, dict[str, Any]]:
    """Reads a published `.pth.tar` ({tier, num_classes, num_frames, variant, model}) into our
    RubiksNet and its variables (see `convert_state_dict`). Needs PyTorch, imported here only."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading a .pth.tar needs PyTorch: pip install 'rubiks-jax[convert]'"
                          ) from e
    # weights_only: the file holds tensors, strings and ints; nothing else is unpickled.
    checkpoint = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: expected a dict with {FIELDS}, got {type(checkpoint).__name__}")
    absent = [field for field in FIELDS if field not in checkpoint]
    if absent:
        raise ValueError(f"{path}: field {absent[0]!r} is missing (a published checkpoint holds "
                         f"{FIELDS})")
    state_dict = {key: value.detach().cpu().numpy() for key, value in checkpoint["model"].items()}
    return convert_state_dict(state_dict, checkpoint["tier"], int(checkpoint["num_classes"]),
                              int(checkpoint["num_frames"]), checkpoint["variant"])
