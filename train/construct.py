"""What a run is made of, built from its config: config I/O (and --config.KEY=VALUE overrides),
the class names a workdir keeps, the data set, the model and its loss (the rubiks_jax.models
registry), the optimizer with its schedules, the initial train state.

    parts = build(config)        # training: reads the data set
    parts = assemble(load_config(workdir), load_class_names(workdir, config), 1)  # no data
    parts.model, parts.loss_fn, parts.tx, parts.state, ...
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import datetime
import json
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from rubiks_jax import optim
from rubiks_jax.data import pipeline
from rubiks_jax.data.features import flip_label_pairs
from rubiks_jax.layers import TEMPERATURE_COLLECTION
from rubiks_jax.models import registry
from train import checkpointing, parallel, steps

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"  # the run's class names: a workdir needs no data set to predict


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


# A checkpoint holds the parameters and optimizer state of one model on one input geometry: a resume
# with another value of these keys cannot load it (or would silently train something else).
FIXED_KEYS = ("model.arch", "model.tier", "model.variant", "model.depth",
              "model.learn_temporal_shift", "data.name", "data.num_frames", "data.crop_size",
              "optim.kind")
# Keys that change neither the parameters nor the results: a resume may change them freely.
# accumulate_steps too: the step's batch, learning rate and data order stay; only BatchNorm's batch
# shrinks (moving a run to a smaller GPU is what it is for).
FREE_KEYS = ("progress_bar", "log_every_steps", "checkpoint_every_steps", "keep_latest",
             "keep_best", "eval_batch_size", "max_train_steps", "max_bad_steps", "init_from",
             "data.data_dir", "data.manual_dir", "model.impl", "optim.accumulate_steps",
             "parallelism")
CONFIG_HISTORY = "config_history"


class ConfigError(ValueError):
    """A config value that cannot work (the message names the key)."""


class ConfigChangeError(ConfigError):
    """A resume whose config differs from the run's in a way that needs a decision."""


def _flat(config: ml_collections.ConfigDict | dict) -> dict:
    tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
        else config  # through JSON: tuples and lists compare equal
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = value
    return out


def config_changes(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict
                   ) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} of every key whose value differs (or that only one
    has, with None for the missing side)."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def record_config(config: ml_collections.ConfigDict, workdir: str,
                  allow_change: bool = False, step: int | None = None) -> None:
    """Writes WORKDIR/config.json for a new run, or checks a resume's config against it first.

    A resume (`step`: the checkpoint it continues from) may change FREE_KEYS; a change of
    FIXED_KEYS is refused and any other change needs `allow_change` (ConfigChangeError naming the
    keys, before anything is written). An accepted change keeps the previous config as
    WORKDIR/config_history/until_step<step>_<time>.json; config.json is then the current one.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if step is None or not os.path.exists(path):
        if jax.process_index() == 0:
            save_config(config, workdir)
        return
    old = load_config(workdir)
    changes = config_changes(old, config)
    if not changes:
        return
    shown = lambda keys: "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in keys)
    fixed = [k for k in changes if k in FIXED_KEYS]
    if fixed:
        raise ConfigChangeError(
            f"{path}: the run in {workdir} was trained with another model or data geometry ("
            f"{shown(fixed)}); its checkpoints cannot continue with this config. Use a new workdir "
            "(or --config.init_from to fine-tune from this run).")
    other = [k for k in changes if k not in FREE_KEYS]
    if other and not allow_change:
        raise ConfigChangeError(
            f"{path}: resuming at step {step} with a config that differs from the run's ("
            f"{shown(other)}). A changed seed or batch size also changes the data order, so the "
            "resumed run is not the one an uninterrupted run would give. Rerun with "
            "--allow_config_change to accept the change (the old config is kept in "
            f"{CONFIG_HISTORY}/), or resume with the run's own config.")
    if jax.process_index() == 0:
        history = os.path.join(workdir, CONFIG_HISTORY)
        os.makedirs(history, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        os.replace(path, os.path.join(history, f"until_step{step}_{stamp}.json"))
        save_config(config, workdir)
        if other:
            print(f"config changed at step {step}: {shown(other)} (the previous config is in "
                  f"{history})", flush=True)


OVERRIDE_PREFIX = "--config."


def apply_overrides(config: ml_collections.ConfigDict, args: list[str]
                    ) -> ml_collections.ConfigDict:
    """A copy of `config` with `--config.a.b=VALUE` arguments applied (a saved run's config.json
    read back; the inference CLIs take them, e.g. a moved data_dir). VALUE is read as the type the
    key has: int, float, bool (true/false/1/0), str, or tuple/list ("(26, 36)", "26,36", "26").
    ConfigError names an unknown key or a value of the wrong type; nothing is written."""
    config = ml_collections.ConfigDict(config.to_dict())
    for arg in args:
        if not arg.startswith(OVERRIDE_PREFIX) or "=" not in arg:
            raise ConfigError(f"{arg}: a config override is {OVERRIDE_PREFIX}KEY=VALUE")
        key, text = arg[len(OVERRIDE_PREFIX):].split("=", 1)
        node, leaf = config_leaf(config, key)
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"{OVERRIDE_PREFIX}{key}: config.{key} is a group, not a value")
        try:
            value = _parse_like(node[leaf], text)
        except (ValueError, SyntaxError) as err:
            raise ConfigError(f"{OVERRIDE_PREFIX}{key}={text}: expected "
                              f"{type(node[leaf]).__name__} like {node[leaf]!r}") from err
        node[leaf] = value
    return config


def config_leaf(config: ml_collections.ConfigDict, key: str
                ) -> tuple[ml_collections.ConfigDict, str]:
    """(the group holding dotted `key`, the key's last part); ConfigError names an unknown key
    (listing the group's keys) or a value used as a group."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"{OVERRIDE_PREFIX}{key}: config.{'.'.join(parts[:i])} is a "
                              "value, not a group")
        if part not in node:
            where = ".".join(["config"] + parts[:i])
            raise ConfigError(f"{OVERRIDE_PREFIX}{key}: no such config key ({where} has: "
                              f"{', '.join(sorted(node.keys()))})")
        if i < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def _parse_like(current, text: str):
    """`text` as a value of `current`'s type (the config's own value decides how to read it)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text) if text.strip() else ()
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        return type(current)(value)
    if isinstance(current, str):
        return text
    try:  # None (a key the config leaves unset): any literal, else the text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ------------------------------------------------------------------------------------------------
# Checks that need no data


def check_config(config: ml_collections.ConfigDict, process_count: int = 1,
                 local_devices: int = 1) -> None:
    """Every check of `config` that needs no data, in seconds: values, choices, divisibility of
    the batches over processes x devices, and a dry construction of the model (abstract, no
    FLOPs), its loss and its optimizer. A ConfigError names the config key."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"config.{key}={_get(config, key)!r}: {what}")

    o, d = config.optim, config.data
    devices = process_count * local_devices
    for key in ("data.num_frames", "data.crop_size", "data.resize_short", "optim.batch_size",
                "optim.num_epochs", "eval_batch_size", "log_every_steps",
                "checkpoint_every_steps", "keep_latest", "eval_every_epochs"):
        need(_get(config, key) > 0, key, "must be positive")
    need(d.resize_short >= d.crop_size, "data.resize_short",
         f"must be at least data.crop_size={d.crop_size}")
    need(config.keep_best >= 0, "keep_best", "must be >= 0")
    need(config.max_bad_steps >= 0, "max_bad_steps", "must be >= 0")
    need(o.batch_size % devices == 0, "optim.batch_size",
         f"must divide evenly over {process_count} processes x {local_devices} devices")
    need(config.eval_batch_size % devices == 0, "eval_batch_size",
         f"must divide evenly over {process_count} processes x {local_devices} devices")
    k = o.accumulate_steps
    need(k > 0 and (o.batch_size // devices) % k == 0, "optim.accumulate_steps",
         f"must divide the per-device batch (optim.batch_size={o.batch_size} over {devices} "
         f"devices: {o.batch_size // devices})")
    need(o.kind in ("sgd", "adam"), "optim.kind", "must be 'sgd' or 'adam'")
    need(config.parallelism in parallel.MODES, "parallelism",
         f"must be one of {parallel.MODES}")
    need(config.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
         "must be float32, bfloat16 or float16")
    need(config.model.impl in ("", "ffi", "xla", "reference"), "model.impl",
         "must be '', 'ffi', 'xla' or 'reference'")
    from rubiks_jax.data.transforms import FLIP_MODES
    need(d.flip in FLIP_MODES, "data.flip", f"must be one of {FLIP_MODES}")
    if config.init_from:
        need(os.path.exists(os.path.join(config.init_from, CONFIG_FILE)), "init_from",
             "is not a training workdir (no config.json)")
    try:
        data_config(config)  # flip_pairs
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        model = registry.create_model(config.model, 2, num_frames=d.num_frames,
                                      bn_axis_name=steps.AXIS)
        registry.get_loss(config.model)
        clip = jax.ShapeDtypeStruct((1, d.num_frames, d.crop_size, d.crop_size, 3), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                                   clip)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config.model: {err}") from err
    try:
        make_optimizer(config, variables["params"], steps_per_epoch=1000)
        optim.temperature_schedule(config.temperature.initial, config.temperature.final, 1000)
    except ValueError as err:
        raise ConfigError(f"config.optim / config.temperature: {err}") from err


def _get(config: ml_collections.ConfigDict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


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


class DataError(RuntimeError):
    """A data set file that is missing or cannot be read."""


def split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
    """The record files of `split` of a prepared builder."""
    info = builder.info.splits[split]
    return [os.fspath(p) for p in info.filepaths]


def check_data(builder: tfds.core.DatasetBuilder, data: pipeline.DataConfig) -> None:
    """Both splits exist, hold examples, and their first example of every file reads (DataError
    naming the file otherwise): before training, so a bad eval split is not found an epoch in."""
    import tensorflow as tf

    for key, split in (("train_split", data.train_split), ("eval_split", data.eval_split)):
        if split not in builder.info.splits or not builder.info.splits[split].num_examples:
            raise DataError(f"config.data.{key}={split!r}: {data.name} in {builder.data_dir} has "
                            f"no such split or it is empty (splits: {list(builder.info.splits)})")
        for path in split_files(builder, split):
            try:
                for _ in tf.data.TFRecordDataset(path).take(1):
                    pass
            except (tf.errors.OpError, OSError) as err:
                raise DataError(f"{path}: cannot read this {split!r} file of {data.name}: "
                                f"{err.message if hasattr(err, 'message') else err}") from err


def find_bad_file(builder: tfds.core.DatasetBuilder, split: str) -> str | None:
    """The first record file of `split` that does not read to its end (with the error), by a full
    scan: called after a read error, whose message gives only a byte offset."""
    import tensorflow as tf

    for path in split_files(builder, split):
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.OpError as err:
            return f"{path}: {err.message}"
    return None


# TFDS's own Video feature reads its deprecated `FeatureConnector.dtype` while writing the data
# set's metadata (tensorflow_datasets/core/features/video_feature.py, `to_json_content`), so
# preparing any video data set logs that deprecation once; no call of ours causes it. Only that
# message is dropped.
_TFDS_VIDEO_DTYPE = "`FeatureConnector.dtype` is deprecated."


def _drop_tfds_video_dtype(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_TFDS_VIDEO_DTYPE)


absl_logging.get_absl_logger().addFilter(_drop_tfds_video_dtype)


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[tfds.core.DatasetBuilder, pipeline.DataConfig, list[str]]:
    """(builder, DataConfig, class names) of the configured data set (prepared if it is ours)."""
    builder = pipeline.get_builder(data_config(config))  # flip pairs need the names: below
    names = builder.info.features["label"].names
    return builder, data_config(config, names), names


# ------------------------------------------------------------------------------------------------
# Class names: a workdir keeps its own, so inference needs no data set


def save_class_names(names: list[str], workdir: str) -> None:
    """Writes WORKDIR/classes.json (process 0), atomically. A run's names never change: DataError
    when the file holds others (a data set rebuilt with other classes under the same name)."""
    path = os.path.join(workdir, CLASSES_FILE)
    if os.path.exists(path):
        check_class_names(_read_class_names(path), names, path)
        return
    if jax.process_index() == 0:
        with open(path + ".tmp", "w") as f:
            json.dump(list(names), f, indent=1)
        os.replace(path + ".tmp", path)


def check_class_names(expected: list[str], found: list[str], where: str) -> None:
    """DataError unless `found` (a data set's) are the run's class names `expected`, in order: a
    checkpoint's classifier rows are tied to them."""
    if list(expected) != list(found):
        diff = next((i for i, (a, b) in enumerate(zip(expected, found)) if a != b),
                    min(len(expected), len(found)))
        raise DataError(f"{where}: the run's {len(expected)} classes differ from the data set's "
                        f"{len(found)} (first difference at index {diff})")


def load_class_names(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The class names of a training workdir: WORKDIR/classes.json, else (a workdir written before
    the file existed) those of the run's data set if it is prepared; it is never prepared here.
    FileNotFoundError says what is missing."""
    path = os.path.join(workdir, CLASSES_FILE)
    if os.path.exists(path):
        return _read_class_names(path)
    try:
        return dataset_class_names(config)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path} not found, and the run's data set cannot give the class names either: {err}. "
            "Point --config.data.data_dir to the prepared data set, or write the names (a JSON "
            "list, in label order) to that file.") from err


def dataset_class_names(config: ml_collections.ConfigDict) -> list[str]:
    """The class names of the config's data set, which must be prepared (FileNotFoundError
    otherwise: it is not prepared here)."""
    builder = pipeline.get_builder(dataclasses.replace(data_config(config), prepare=False))
    return list(builder.info.features["label"].names)


def _read_class_names(path: str) -> list[str]:
    with open(path) as f:
        return list(json.load(f))


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
        temporal_factor=o.temporal_factor, kind=o.kind, freeze_shifts=o.freeze_shifts)


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
    builder: tfds.core.DatasetBuilder | None   # None: built without the data set (inference)
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
    builder, _, names = load_data(config)
    num_train = builder.info.splits[config.data.train_split].num_examples
    return assemble(config, names, max(1, num_train // config.optim.batch_size), builder)


def assemble(config: ml_collections.ConfigDict, class_names: list[str], steps_per_epoch: int,
             builder: tfds.core.DatasetBuilder | None = None, abstract: bool = False
             ) -> Components:
    """Model, loss, optimizer and initial state of `config` for `class_names`, reading no data.
    `steps_per_epoch` shapes the learning-rate and temperature schedules only, not the structure
    of the state (inference, which restores a checkpoint into it, may pass any). `abstract`: the
    state as shapes and dtypes only (jax.ShapeDtypeStruct), enough to restore a checkpoint into,
    in a fraction of a second instead of an eager initialisation's many seconds."""
    data = data_config(config, class_names)
    model = registry.create_model(config.model, len(class_names),
                                  num_frames=config.data.num_frames, bn_axis_name=steps.AXIS)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    clip = jnp.zeros((1, data.num_frames, data.crop_size, data.crop_size, 3), jnp.float32)
    init = functools.partial(model.init, train=False)
    variables = jax.eval_shape(init, init_rng, clip) if abstract else init(init_rng, clip)
    tx, schedules = make_optimizer(config, variables["params"], steps_per_epoch)
    # Annealed over the planned run (not max_train_steps), so a shortened run anneals the same.
    temperature_fn = optim.temperature_schedule(config.temperature.initial,
                                                config.temperature.final,
                                                steps_per_epoch * config.optim.num_epochs)
    return Components(config=config, builder=builder, data=data, class_names=list(class_names),
                      model=model, loss_fn=registry.get_loss(config.model), tx=tx,
                      schedules=schedules, temperature_fn=temperature_fn,
                      state=jax.eval_shape(lambda v: initial_state(v, tx), variables)
                      if abstract else initial_state(variables, tx), dropout_rng=dropout_rng,
                      steps_per_epoch=steps_per_epoch)
