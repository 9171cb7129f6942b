"""python -m train.evaluate --workdir DIR --views VIEWS [--step best|latest|N] [--config.KEY=VALUE ...]

Evaluates a trained run on its eval split with a test protocol (docs/DESIGN.md, "Evaluation
protocols"), prints top-1 / top-5 and writes WORKDIR/eval_<views>_step<N>.json. Every example is
counted once. VIEWS: 1clip (centre crop of the segment centres), 2clip (segment centres and starts
x three crops covering the short side = 6 views, softmax scores averaged), official_1clip and
official_2clip (the published code's: crops of frames resized to short side 256, logits averaged).
--config.KEY=VALUE changes the run's config for this call only, e.g. a data set that moved:
--config.data.data_dir=/new/place (its classes must be the run's; its train split is not read).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from rubiks_jax.data.sampling import VIEWS
from train import construct, inference
from train.metrics_log import quiet_logs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
flags.DEFINE_enum("views", "1clip", list(VIEWS), "Test view set.")
flags.DEFINE_string("step", "best", "Checkpoint: 'best' (by validation top-1), 'latest' or a step.")
flags.DEFINE_integer("batch_size", 0, "Eval batch size (0: the config's).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    args, overrides = inference.split_argv(argv)
    if args:
        raise app.UsageError(f"unexpected arguments: {args}")
    quiet_logs()
    try:
        config = construct.apply_overrides(construct.load_config(FLAGS.workdir), overrides)
        report = inference.evaluate_run(FLAGS.workdir, FLAGS.views, FLAGS.step, FLAGS.batch_size,
                                        config)
    except (construct.ConfigError, construct.DataError, FileNotFoundError) as err:
        sys.exit(f"train.evaluate: error: {err}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main, flags_parser=inference.flags_parser)
