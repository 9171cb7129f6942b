"""RubiksNet-Large on HMDB51 split 1 (our builder, files in manual_dir), fine-tuned from Kinetics:
set --config.init_from=<Kinetics workdir>."""

from train.configs import base


def get_config():
    c = base.get_config()
    c.data.name = "rubiks_hmdb51/split1"
    c.data.eval_split = "test"
    c.model.tier = "large"
    c.optim.base_lr = 0.001
    c.optim.num_epochs = 15
    c.optim.warmup_epochs = 1
    c.optim.decay_epochs = (10, 13)
    return c
