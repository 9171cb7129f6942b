"""python -m train.convert CHECKPOINT.pth.tar --workdir DIR [--config train/configs/<name>.py[:<arg>]]

Writes a workdir holding a published RubiksNet checkpoint (rubiks_jax.convert.from_official) as a
run at step 0: config.json and an Orbax checkpoint of the train state (the converted parameters,
BatchNorm statistics and AQ temperatures; a fresh optimizer state). train.evaluate, train.predict
and config.init_from (fine-tuning) read it as they read a trained run.

The config names the data set the model is evaluated on, which must have the checkpoint's classes;
its model tier, variant and frame count are set from the checkpoint. If that data set is prepared,
its class names are written to classes.json (prediction then needs no data set). Without --config:
174 classes take train/configs/ssv2.py:<tier>[_aq], 400 classes train/configs/kinetics400.py.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from rubiks_jax.convert import from_official
from train import checkpointing, construct
from train.configs import kinetics400, ssv2

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory to write (config.json and checkpoints/).")
config_flags.DEFINE_config_file("config", None, "Config of the evaluation data set (default: by "
                                "the checkpoint's classes, see the module docstring).",
                                lock_config=True)
flags.mark_flags_as_required(["workdir"])


def default_config(num_classes: int, tier: str, variant: str) -> ml_collections.ConfigDict:
    """The config of the data set the published checkpoints of `num_classes` classes were trained
    on: Something-Something-V2 (174) or Kinetics-400 (400)."""
    if num_classes == 174:
        return ssv2.get_config(tier + ("_aq" if variant == "rubiks3d_aq" else ""))
    if num_classes == 400:
        return kinetics400.get_config()
    raise ValueError(f"no default config for {num_classes} classes (174: Something-Something-V2, "
                     f"400: Kinetics-400): pass --config with a data set of {num_classes} classes")


def write_workdir(checkpoint: str, workdir: str,
                  config: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
    """Converts `checkpoint` into `workdir` (which must hold no checkpoints yet) as step 0 of a run
    of `config` (default_config if None); returns the config written."""
    model, variables = from_official(checkpoint)
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        raise FileExistsError(f"{checkpoints} is not empty: convert into a new workdir")
    if config is None:
        config = default_config(model.num_classes, model.tier, model.variant)
    config = config.copy_and_resolve_references()
    config.model.arch = "rubiksnet"
    config.model.tier = model.tier
    config.model.variant = model.variant
    config.data.num_frames = model.num_frames
    names = _class_names(config, model.num_classes)
    # The optimizer's state only has to have the structure construct.build gives it (restoring
    # needs that); steps_per_epoch shapes the schedules, not the state.
    tx, _ = construct.make_optimizer(config, variables["params"], steps_per_epoch=1)
    state = jax.device_get(construct.initial_state(variables, tx))
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpointing.manager(workdir)
    checkpointing.save(mngr, 0, state, data_step=0)
    mngr.wait_until_finished()
    mngr.close()
    construct.save_config(config, workdir)
    if names is not None:
        construct.save_class_names(names, workdir)
    return config


def _class_names(config: ml_collections.ConfigDict, num_classes: int) -> list[str] | None:
    """The class names of the config's data set if it is prepared (None otherwise: inference then
    reads them from the data set once it is); ValueError when it has another number of classes."""
    try:
        names = construct.dataset_class_names(config)
    except FileNotFoundError:
        return None
    if len(names) != num_classes:
        raise ValueError(f"the checkpoint has {num_classes} classes, the data set of the config "
                         f"({config.data.name}) has {len(names)}")
    return names


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m train.convert CHECKPOINT.pth.tar --workdir DIR")
    if not FLAGS["verbosity"].present:  # orbax logs at INFO
        logging.set_verbosity(logging.WARNING)
    config = write_workdir(argv[1], FLAGS.workdir, FLAGS.config)
    print(f"wrote {FLAGS.workdir}: RubiksNet-{config.model.tier} {config.model.variant}, "
          f"{config.data.num_frames} frames, data set {config.data.name}")
    if not os.path.exists(os.path.join(FLAGS.workdir, construct.CLASSES_FILE)):
        print(f"no {construct.CLASSES_FILE}: {config.data.name} is not prepared in "
              f"{config.data.data_dir or 'the TFDS default directory'}; prediction reads the class "
              "names from it once it is")


if __name__ == "__main__":
    app.run(main)
