"""python -m train.evaluate --workdir DIR --views 1clip|2clip [--step best|latest|N]

Evaluates a trained run on its eval split with a published protocol (docs/DESIGN.md, "Evaluation
protocols"; 1-clip: centre crop of the segment centres; 2-clip: segment centres and starts x three
crops = 6 views averaged), prints top-1 / top-5 and writes WORKDIR/eval_<views>_step<N>.json.
Every example is counted once.
"""

from __future__ import annotations

import json

from absl import app, flags

from train import inference

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
flags.DEFINE_enum("views", "1clip", ["1clip", "2clip"], "Test views.")
flags.DEFINE_string("step", "best", "Checkpoint: 'best' (by validation top-1), 'latest' or a step.")
flags.DEFINE_integer("batch_size", 0, "Eval batch size (0: the config's).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    report = inference.evaluate_run(FLAGS.workdir, FLAGS.views, FLAGS.step, FLAGS.batch_size)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
