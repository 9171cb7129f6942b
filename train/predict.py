"""python -m train.predict --workdir DIR VIDEO_OR_FRAME_DIR [--top 5]

Classifies one video (a file ffmpeg can read, or a folder of frame images, frame_2 before
frame_10: rubiks_jax.data.video_io) with a trained run: the 1-clip protocol (docs/DESIGN.md,
"Evaluation protocols"), prints the top classes with their scores.
"""

from __future__ import annotations

from absl import app, flags

from train import inference
from train.metrics_log import quiet_logs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir.")
flags.DEFINE_string("step", "best", "Checkpoint: 'best', 'latest' or a step.")
flags.DEFINE_integer("top", 5, "How many classes to print.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    quiet_logs()
    if len(argv) != 2:
        raise app.UsageError("usage: python -m train.predict --workdir DIR VIDEO_OR_FRAME_DIR")
    for name, score in inference.predict(FLAGS.workdir, argv[1], FLAGS.step, FLAGS.top):
        print(f"{score:8.4f}  {name}")


if __name__ == "__main__":
    app.run(main)
