"""Small training runs on the synthetic data set (tiny inputs, 4 steps per epoch) for the tests of
train/: their config, their CLI flags and their metrics.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections

from train.configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = dict(num_frames=4, resize_short=32, crop_size=32)


def small_config(data_dir: str, **kw) -> ml_collections.ConfigDict:
    c = synthetic.get_config()
    c.data.name = "rubiks_synthetic/small"
    c.data.data_dir = data_dir
    for k, v in OVERRIDES.items():
        setattr(c.data, k, v)
    c.data.shuffle_buffer = 64
    c.optim.batch_size = 8
    c.eval_batch_size = 8
    c.optim.num_epochs = 2          # 4 steps per epoch
    c.optim.warmup_epochs = 1
    c.optim.decay_epochs = (2,)
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.progress_bar = False
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def metrics_rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def cli(args: list[str], **kw) -> subprocess.Popen:
    """`python -m ARGS` from the repository root, stdout and stderr merged."""
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def cli_flags(data_dir: str, workdir: str, epochs: int) -> list[str]:
    """train.main flags for the small run on the synthetic config."""
    flags = ["--config", "train/configs/synthetic.py", "--workdir", workdir,
             "--config.data.name=rubiks_synthetic/small", f"--config.data.data_dir={data_dir}",
             "--config.optim.batch_size=8", "--config.eval_batch_size=8",
             f"--config.optim.num_epochs={epochs}", "--config.optim.decay_epochs=(100,)",
             "--config.checkpoint_every_steps=2", "--config.log_every_steps=2"]
    return flags + [f"--config.data.{k}={v}" for k, v in OVERRIDES.items()]


def config_flags_of(config: ml_collections.ConfigDict) -> list[str]:
    """--config.key=value flags that turn train/configs/synthetic.py into `config`."""
    def flat(tree, prefix=""):
        out = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    base = flat(synthetic.get_config().to_dict())
    flags = []
    for key, value in flat(config.to_dict()).items():
        if value != base.get(key):
            text = f"({','.join(map(str, value))},)" if isinstance(value, tuple) else value
            flags.append(f"--config.{key}={text}")
    return flags


def small_flags(data_dir: str, workdir: str, **kw) -> list[str]:
    """train.main flags for exactly small_config(data_dir, **kw) (the `trained` fixture's run)."""
    return ["--config", "train/configs/synthetic.py", "--workdir", workdir,
            *config_flags_of(small_config(data_dir, **kw))]
