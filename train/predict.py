"""python -m train.predict --workdir DIR VIDEO_OR_FRAME_DIR [...] [--top 5] [--batch_size 8]
    [--config.KEY=VALUE ...]

Classifies videos (files ffmpeg can read, or folders of frame images, frame_2 before frame_10:
rubiks_jax.data.video_io) with a trained run: the 1-clip protocol (docs/DESIGN.md, "Evaluation
protocols") with the preprocessing of the run's config, the jitted model `--batch_size` videos at a
time; prints each video's top classes with their scores. Needs no data set: the workdir's
config.json and classes.json suffice. --config.KEY=VALUE changes the run's config for this call
only (e.g. --config.model.impl=xla).
"""

from __future__ import annotations

import sys

from absl import app, flags

from train import construct, inference
from train.metrics_log import quiet_logs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("step", "best", "Checkpoint: 'best', 'latest' or a step.")
flags.DEFINE_integer("top", 5, "How many classes to print per video.")
flags.DEFINE_integer("batch_size", 8, "Videos per forward pass.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    videos, overrides = inference.split_argv(argv)
    if not videos:
        raise app.UsageError("usage: python -m train.predict --workdir DIR VIDEO_OR_FRAME_DIR ...")
    quiet_logs()
    try:
        config = construct.apply_overrides(construct.load_config(FLAGS.workdir), overrides)
        results = inference.predict(FLAGS.workdir, videos, FLAGS.step, FLAGS.top,
                                    FLAGS.batch_size, config)
    except (construct.ConfigError, FileNotFoundError) as err:
        sys.exit(f"train.predict: error: {err}")
    for path, top in zip(videos, results):
        print(path + "".join(f"\n  {score:8.4f}  {name}" for name, score in top), flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=inference.flags_parser)
