"""The model registry: the one factory of the models the trainer, the FLOP counter and the
benchmarks build, and the training loss each family supplies (Scenic's pattern: the generic train
step calls the model's loss and knows nothing of AQ).

    model = create_model("rubiksnet", 174, tier="small", variant="rubiks3d_aq")
    model = create_model(config.model, num_classes, num_frames=8, bn_axis_name="batch")
    loss_fn = get_loss(config.model)  # (logits, labels, variables) -> (loss, metrics)

A spec is a family name from MODELS ("rubiksnet": the tiers and variants, "tsm": the TSM ResNets)
or a mapping of options naming its family under "arch" (the trainer's config.model); keyword
options override the mapping's. Options are the module's attributes (tier, variant, depth,
dropout_rate, dtype, ...) and the loss factory's parameters (budget, budget_weight). One model
config serves every family, so an option only another family knows is ignored and one no family
knows is an error; "" stands for the module's default (a config file cannot hold None) and a dtype
may be given by name.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rubiks_jax.models import budget as budget_lib
from rubiks_jax.models.rubiksnet import RubiksNet
from rubiks_jax.models.tsm import TSMResNet

# (logits (N, K) float32, labels (N,) int, the model's variables) -> (scalar loss, named scalars)
LossFn = Callable[[jax.Array, jax.Array, Mapping], tuple[jax.Array, dict[str, jax.Array]]]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array,
                       variables: Mapping) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean softmax cross-entropy; reported as "cross_entropy"."""
    del variables
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce, {"cross_entropy": ce}


def budgeted_cross_entropy_loss(budget: float = 0.125, budget_weight: float = 10.0) -> LossFn:
    """RubiksNet-AQ's loss: cross-entropy + budget_weight * relu(B - budget)^2, with B the expected
    fraction of channels shifted in time at the step's temperature (reported as "budget")."""

    def loss_fn(logits, labels, variables):
        ce, metrics = cross_entropy_loss(logits, labels, variables)
        loss = ce + budget_lib.budget_loss(variables, budget, budget_weight)
        return loss, {**metrics, "budget": budget_lib.mean_budget(variables)}

    return loss_fn


def _rubiksnet_loss(variant: str = "rubiks3d", budget: float = 0.125,
                    budget_weight: float = 10.0) -> LossFn:
    if variant == "rubiks3d_aq":
        return budgeted_cross_entropy_loss(budget, budget_weight)
    return cross_entropy_loss


def _tsm_loss() -> LossFn:
    return cross_entropy_loss


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """A registered family: its Flax module and the factory of its training loss (whose
    parameters are the loss options it reads)."""

    module: type[nn.Module]
    loss: Callable[..., LossFn]

    @property
    def module_options(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self.module)
                         if f.init and f.name not in ("parent", "name", "num_classes"))

    @property
    def loss_options(self) -> frozenset[str]:
        return frozenset(inspect.signature(self.loss).parameters)


MODELS: dict[str, ModelFamily] = {
    "rubiksnet": ModelFamily(RubiksNet, _rubiksnet_loss),
    "tsm": ModelFamily(TSMResNet, _tsm_loss),
}


def get_model_family(name: str) -> ModelFamily:
    """The registered family `name`; a ValueError lists the registered ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name]


def _resolve(spec: str | Mapping, options: dict[str, Any]) -> tuple[ModelFamily, dict[str, Any]]:
    if isinstance(spec, str):
        name, merged = spec, dict(options)
    else:
        merged = {**dict(spec.items()), **options}  # a ConfigDict is no Mapping but has items()
        if "arch" not in merged:
            raise ValueError(f"a model config names its family under 'arch' ({sorted(MODELS)})")
        name = merged.pop("arch")
    family = get_model_family(name)
    known = frozenset().union(*(f.module_options | f.loss_options for f in MODELS.values()))
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown model options {unknown}; known: {sorted(known)}")
    return family, {k: v for k, v in merged.items() if not (isinstance(v, str) and v == "")}


def create_model(spec: str | Mapping, num_classes: int, **options: Any) -> nn.Module:
    """The Flax module of `spec` with `num_classes` outputs; takes (N, T, H, W, 3) clips."""
    family, opts = _resolve(spec, options)
    kwargs = {k: v for k, v in opts.items() if k in family.module_options}
    if "dtype" in kwargs:
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    return family.module(num_classes=num_classes, **kwargs)


def get_loss(spec: str | Mapping, **options: Any) -> LossFn:
    """The training loss the family of `spec` supplies for these options."""
    family, opts = _resolve(spec, options)
    return family.loss(**{k: v for k, v in opts.items() if k in family.loss_options})
