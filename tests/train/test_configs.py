"""The configs as train.main reads them (ml_collections config_flags): ssv2.py:<tier>[_aq] picks the
model, every config takes --config.init_from and builds its model and loss from the registry."""

import os

import jax.numpy as jnp
import pytest
from absl import flags
from ml_collections import config_flags

from rubiks_jax.models import create_model, get_loss
from tests.train.synthetic_runs import ROOT
from train.configs import ssv2

CONFIGS = os.path.join(ROOT, "train", "configs")


def parse(*args: str):
    """FLAGS.config as train.main gets it from these command-line arguments."""
    argv = ["main", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    return values.config


@pytest.mark.parametrize("arg, tier, variant", [
    ("tiny", "tiny", "rubiks3d"), ("small", "small", "rubiks3d"), ("medium", "medium", "rubiks3d"),
    ("large", "large", "rubiks3d"), ("large_aq", "large", "rubiks3d_aq")])
def test_ssv2_argument_picks_tier_and_variant(arg, tier, variant):
    c = parse(f"--config={CONFIGS}/ssv2.py:{arg}")
    assert (c.data.name, c.data.flip) == ("rubiks_ssv2", "swap_pairs")
    assert (c.model.tier, c.model.variant, c.model.budget) == (tier, variant, 0.125)


@pytest.mark.parametrize("arg", [None, "huge", "aq"])
def test_ssv2_without_a_model_says_how_to_pick_one(arg):
    with pytest.raises(ValueError, match=r"ssv2.py:<tier>"):
        ssv2.get_config(arg)


@pytest.mark.parametrize("name", ["synthetic.py", "ssv2.py:small", "ssv2.py:large_aq",
                                  "kinetics400.py", "ucf101.py", "hmdb51.py"])
def test_every_config_takes_init_from_and_builds_its_model_and_loss(name):
    c = parse(f"--config={CONFIGS}/{name}", "--config.init_from=/runs/kinetics")
    assert c.init_from == "/runs/kinetics"
    model = create_model(c.model, 10, num_frames=c.data.num_frames)
    assert model.num_classes == 10 and model.tier == c.model.tier
    _, metrics = get_loss(c.model)(jnp.zeros((2, 10)), jnp.zeros((2,), jnp.int32), {"params": {}})
    assert ("budget" in metrics) == (c.model.variant == "rubiks3d_aq")
