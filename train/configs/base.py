"""The recipe (docs/DESIGN.md, "Training recipe") as an ml_collections ConfigDict; data set configs
adjust it."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "rubiks_synthetic/default"   # TFDS name[/config][:version]
    c.data.data_dir = ""                       # "" = TFDS default (~/tensorflow_datasets)
    c.data.manual_dir = ""                     # downloaded files for our real-data builders
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.num_frames = 8
    c.data.resize_short = 256
    c.data.crop_size = 224
    c.data.flip = "always"                     # never | always | swap_pairs | except_pairs
    c.data.flip_pairs = "auto"                 # classes a flip exchanges: "auto" (from the class
                                               # names), "" (none) or "0-1,6-7"
    c.data.shuffle_buffer = 1024

    c.model = ml_collections.ConfigDict()
    c.model.arch = "rubiksnet"                 # rubiksnet | tsm
    c.model.tier = "large"
    c.model.variant = "rubiks3d"
    c.model.learn_temporal_shift = True
    c.model.shift_init = "uniform"
    c.model.depth = 50                         # tsm only
    c.model.dropout_rate = 0.3
    c.model.dtype = "float32"                  # compute dtype: float32 | bfloat16
    c.model.impl = ""                          # shift op implementation: "" (default) | ffi | xla
    c.model.budget = 0.125                     # rubiks3d_aq's loss: cross-entropy
                                               # + budget_weight * relu(B - budget)^2
    c.model.budget_weight = 10.0

    c.optim = ml_collections.ConfigDict()
    c.optim.kind = "sgd"                       # sgd (the published recipe) | adam
    c.optim.batch_size = 64                    # global, over all devices and processes
    c.optim.accumulate_steps = 1               # micro-batches per step: gradients of k slices
                                               # of each device's batch averaged (memory of
                                               # batch/k; BatchNorm normalises per micro-batch)
    c.optim.base_lr = 0.025                    # for reference_batch; scaled linearly
    c.optim.reference_batch = 64
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.optim.num_epochs = 45
    c.optim.warmup_epochs = 5
    c.optim.decay_epochs = (26, 36)
    c.optim.shift_lr_ratio = 0.01
    c.optim.temporal_factor = 0.1
    c.optim.freeze_shifts = False              # True: the shift group (RubiksShift shifts,
                                               # AttentionShift logits) is never updated

    c.temperature = ml_collections.ConfigDict()  # rubiks3d_aq's AttentionShift temperature:
                                                 # exponential over the planned run
    c.temperature.initial = 2.0
    c.temperature.final = 0.01

    c.init_from = ""                           # fine-tuning: another run's workdir (its best
                                               # checkpoint, classifier left out)

    c.log_every_steps = 50
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = 1000            # plus one after every evaluation
    c.keep_latest = 2
    c.keep_best = 3
    c.eval_batch_size = 32
    c.max_train_steps = -1                     # > 0 stops early (smoke runs)
    c.max_bad_steps = 0                        # steps with a non-finite loss or gradient that are
                                               # skipped (not applied) before the run stops
    c.progress_bar = True
    c.parallelism = "pmap"                     # pmap | jit (one Mesh over all devices of all
                                               # processes; the same steps and checkpoints)
    return c
