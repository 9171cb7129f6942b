"""What a run is made of, built from its config: config I/O, the data set, the model and its loss
(the rubiks_jax.models registry), the optimizer with its schedules, the initial train state.

    parts = build(config)        # or build(load_config(workdir)) for a trained run
    parts.model, parts.loss_fn, parts.tx, parts.state, ...
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tensorflow_datasets as tfds

from rubiks_jax import optim
from rubiks_jax.data import pipeline
from rubiks_jax.data.features import flip_label_pairs
from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import registry
from train import checkpointing, steps

CONFIG_FILE = "config.json"


# ------------------------------------------------------------------------------------------------
# Config I/O


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes WORKDIR/config.json atomically (evaluation and prediction rebuild the run from it)."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


# ------------------------------------------------------------------------------------------------
# Data


def data_config(config: ml_collections.ConfigDict,
                label_names: list[str] | None = None) -> pipeline.DataConfig:
    """config.data as a pipeline.DataConfig; "auto" flip pairs come from `label_names`."""
    d = config.data
    if d.flip_pairs == "auto":
        pairs = flip_label_pairs(label_names or [])
    else:
        try:
            pairs = [tuple(int(v) for v in p.split("-")) for p in d.flip_pairs.split(",") if p]
        except ValueError:
            pairs = [()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"config.data.flip_pairs must be 'auto', '' or like '0-1,6-7', got "
                             f"{d.flip_pairs!r}")
    return pipeline.DataConfig(
        name=d.name, data_dir=d.data_dir or None, manual_dir=d.manual_dir or None,
        train_split=d.train_split, eval_split=d.eval_split, num_frames=d.num_frames,
        resize_short=d.resize_short, crop_size=d.crop_size, flip=d.flip,
        flip_pairs=tuple(tuple(p) for p in pairs), shuffle_buffer=d.shuffle_buffer)


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[tfds.core.DatasetBuilder, pipeline.DataConfig, list[str]]:
    """(builder, DataConfig, class names) of the configured data set (prepared if it is ours)."""
    builder = pipeline.get_builder(data_config(config))  # flip pairs need the names: below
    names = builder.info.features["label"].names
    return builder, data_config(config, names), names


# ------------------------------------------------------------------------------------------------
# Model, optimizer, state


def make_optimizer(config: ml_collections.ConfigDict, params, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """config.optim as rubiks_jax.optim.make_optimizer: (tx, per-group learning-rate schedules)."""
    o = config.optim
    lr = optim.scale_learning_rate(o.base_lr, o.batch_size, o.reference_batch)
    return optim.make_optimizer(
        params=params, base_lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
        steps_per_epoch=steps_per_epoch, warmup_epochs=o.warmup_epochs,
        decay_epochs=tuple(o.decay_epochs), shift_lr_ratio=o.shift_lr_ratio,
        temporal_factor=o.temporal_factor, kind=o.kind)


def initial_state(variables: dict, tx: optax.GradientTransformation) -> steps.TrainState:
    """Step 0 from freshly initialised model variables."""
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                            batch_stats=variables.get("batch_stats", {}),
                            temperature=variables.get(TEMPERATURE_COLLECTION, {}),
                            opt_state=tx.init(variables["params"]))


def init_from(workdir: str, state: steps.TrainState) -> steps.TrainState:
    """Fine-tuning: parameters and BatchNorm statistics of another run's best checkpoint (its latest
    if none was evaluated), except the classifier (its classes differ)."""
    mngr = checkpointing.manager(workdir, read_only=True)
    source, _ = checkpointing.restore(mngr, checkpointing.find_step(mngr, "best"), None)
    params = dict(source["params"])
    params["classifier"] = state.params["classifier"]
    return state.replace(params=params, batch_stats=source["batch_stats"])


@dataclasses.dataclass(frozen=True)
class Components:
    """A run built from its config; `state` is step 0, freshly initialised from config.seed."""

    config: ml_collections.ConfigDict
    builder: tfds.core.DatasetBuilder
    data: pipeline.DataConfig
    class_names: list[str]
    model: nn.Module
    loss_fn: registry.LossFn
    tx: optax.GradientTransformation
    schedules: dict[str, optax.Schedule]       # per parameter group: step -> learning rate
    temperature_fn: optax.Schedule             # step -> AttentionShift temperature
    state: steps.TrainState
    dropout_rng: jax.Array
    steps_per_epoch: int


def build(config: ml_collections.ConfigDict) -> Components:
    """The data set (prepared if it is ours), model, loss, optimizer, initial state of `config`."""
    builder, data, names = load_data(config)
    model = registry.create_model(config.model, len(names), num_frames=config.data.num_frames,
                                  bn_axis_name=steps.AXIS)
    num_train = builder.info.splits[data.train_split].num_examples
    steps_per_epoch = max(1, num_train // config.optim.batch_size)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    clip = jnp.zeros((1, data.num_frames, data.crop_size, data.crop_size, 3), jnp.float32)
    variables = model.init(init_rng, clip, train=False)
    tx, schedules = make_optimizer(config, variables["params"], steps_per_epoch)
    # Annealed over the planned run (not max_train_steps), so a shortened run anneals the same.
    temperature_fn = optim.temperature_schedule(config.temperature.initial,
                                                config.temperature.final,
                                                steps_per_epoch * config.optim.num_epochs)
    return Components(config=config, builder=builder, data=data, class_names=names, model=model,
                      loss_fn=registry.get_loss(config.model), tx=tx, schedules=schedules,
                      temperature_fn=temperature_fn, state=initial_state(variables, tx),
                      dropout_rng=dropout_rng, steps_per_epoch=steps_per_epoch)
