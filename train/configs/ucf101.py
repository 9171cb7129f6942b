"""RubiksNet-Large on UCF101 split 1, fine-tuned from Kinetics with the same knobs: set
--config.init_from=<Kinetics workdir>. Two sources of the data:

  ucf101.py            TFDS's own `ucf101` (prepared in the data directory with `tfds build ucf101`,
                       which downloads the videos and needs a system ffmpeg);
  ucf101.py:prepared   our `rubiks_ucf101`, reading the frame folders that
                       `python -m rubiks_jax.data.prepare ucf101 --src <download> --dst DIR` made
                       from the official download: set --config.data.manual_dir=DIR.
"""

import ml_collections

from train.configs import base

SOURCES = {"": "ucf101/ucf101_1", "prepared": "rubiks_ucf101/split1"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if (arg or "") not in SOURCES:
        raise ValueError(f"train/configs/ucf101.py takes no argument (TFDS's ucf101) or "
                         f"ucf101.py:prepared (rubiks_ucf101), got {arg!r}")
    c = base.get_config()
    c.data.name = SOURCES[arg or ""]
    c.data.eval_split = "test"
    c.model.tier = "large"
    c.optim.base_lr = 0.001
    c.optim.num_epochs = 15
    c.optim.warmup_epochs = 1
    c.optim.decay_epochs = (10, 13)
    return c
