"""TSN segment sampling (docs/DESIGN.md, "Training recipe" and "Evaluation protocols"): which
frames of a video make a clip of T frames.

The video's n frames are cut into T equal segments. Training takes one random frame per segment;
testing takes each segment's centre; the second clip of "2-clip" testing takes each segment's
start. Videos shorter than T repeat frames (evenly spread indices). All functions are TensorFlow
ops so they run inside tf.data; `seed` is a stateless-random seed of shape (2,).
"""

from __future__ import annotations

import tensorflow as tf


def _segment_bounds(num_video_frames: tf.Tensor, num_segments: int) -> tuple[tf.Tensor, tf.Tensor]:
    n = tf.cast(num_video_frames, tf.float32)
    length = n / num_segments
    starts = tf.range(num_segments, dtype=tf.float32) * length
    return starts, length


def train_indices(num_video_frames: tf.Tensor, num_segments: int, seed: tf.Tensor) -> tf.Tensor:
    """(T,) int32: one uniformly random frame inside each of the T segments."""
    starts, length = _segment_bounds(num_video_frames, num_segments)
    u = tf.random.stateless_uniform((num_segments,), seed=seed)
    idx = tf.cast(tf.floor(starts + u * length), tf.int32)
    return tf.clip_by_value(idx, 0, tf.cast(num_video_frames, tf.int32) - 1)


def eval_indices(num_video_frames: tf.Tensor, num_segments: int, position: str = "centre") -> tf.Tensor:
    """(T,) int32: segment centres ("centre") or segment starts ("start")."""
    if position not in ("centre", "start"):
        raise ValueError(f"position must be 'centre' or 'start', got {position!r}")
    starts, length = _segment_bounds(num_video_frames, num_segments)
    offset = length / 2.0 if position == "centre" else 0.0
    idx = tf.cast(tf.floor(starts + offset), tf.int32)
    return tf.clip_by_value(idx, 0, tf.cast(num_video_frames, tf.int32) - 1)


# The named test view sets (docs/DESIGN.md, "Evaluation protocols") and the clips each takes: ours
# and the published code's. They differ in the spatial crops and in how views are combined
# (rubiks_jax.data.pipeline.eval_views, train.steps.eval_step), not in the frames.
CLIPS = {"1clip": ("centre",), "2clip": ("centre", "start"),
         "official_1clip": ("centre",), "official_2clip": ("centre", "start")}
VIEWS = tuple(CLIPS)


def clip_indices(num_video_frames: tf.Tensor, num_segments: int, views: str) -> tf.Tensor:
    """(clips, T) int32 test indices of a view set: segment centres (every set), then segment
    starts (the 2-clip sets)."""
    if views not in CLIPS:
        raise ValueError(f"views must be one of {VIEWS}, got {views!r}")
    return tf.stack([eval_indices(num_video_frames, num_segments, p) for p in CLIPS[views]])
