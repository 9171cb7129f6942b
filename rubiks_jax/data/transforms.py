"""Clip transforms in TensorFlow (docs/DESIGN.md, "Training recipe" and "Evaluation protocols"):
decode the sampled frames, multi-scale crop, flip with label swap, test crops, ImageNet
normalisation. Frames are (T, H, W, 3); the same crop and flip apply to every frame of a clip.
Random ops are stateless, seeded per example.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
FLIP_MODES = ("never", "always", "swap_pairs", "except_pairs")


def decode_frames(encoded: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Decodes only frames `indices` (T,) of the encoded frames (n,): (T, H, W, 3) uint8."""
    picked = tf.gather(encoded, indices)
    return tf.map_fn(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False), picked,
                     fn_output_signature=tf.TensorSpec((None, None, 3), tf.uint8))


def resize_short_side(frames: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes so the shorter side is `size` (bilinear), keeping the aspect ratio; float32."""
    shape = tf.cast(tf.shape(frames)[1:3], tf.float32)
    scale = size / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    return tf.image.resize(tf.cast(frames, tf.float32), new, method="bilinear")


def multi_scale_crop(frames: tf.Tensor, crop_size: int, seed: tf.Tensor,
                     scales: Sequence[float] = MULTI_SCALES, max_distort: int = 1) -> tf.Tensor:
    """TSN multi-scale crop: crop height and width each a scale of the short side (scales no more
    than `max_distort` apart), at a random position, resized to crop_size x crop_size."""
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    base = tf.cast(tf.minimum(h, w), tf.float32)
    pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales))
             if abs(i - j) <= max_distort]
    sizes = tf.cast(tf.constant(scales, tf.float32) * base, tf.int32)
    k = tf.random.stateless_uniform((), seed=seed, maxval=len(pairs), dtype=tf.int32)
    pair = tf.gather(tf.constant(pairs, tf.int32), k)
    ch, cw = tf.gather(sizes, pair[0]), tf.gather(sizes, pair[1])
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform((), seed=s1, maxval=h - ch + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform((), seed=s2, maxval=w - cw + 1, dtype=tf.int32)
    crop = frames[:, y:y + ch, x:x + cw]
    return tf.image.resize(tf.cast(crop, tf.float32), (crop_size, crop_size), method="bilinear")


def centre_crop(frames: tf.Tensor, crop_size: int) -> tf.Tensor:
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    y, x = (h - crop_size) // 2, (w - crop_size) // 2
    return frames[:, y:y + crop_size, x:x + crop_size]


def three_crops(frames: tf.Tensor, crop_size: int, short_side: int | None = None) -> tf.Tensor:
    """(3, T, S, S): after resizing the short side to `short_side` (default S), crops at the start,
    centre and end of the long side (left / centre / right for landscape video), centred across the
    short side (which they cover whole at the default)."""
    frames = resize_short_side(frames, short_side or crop_size)
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    long_side, short = tf.maximum(h, w), tf.minimum(h, w)
    across = (short - crop_size) // 2
    offsets = [0, (long_side - crop_size) // 2, long_side - crop_size]
    crops = []
    for off in offsets:
        crops.append(tf.cond(
            w >= h, lambda o=off: frames[:, across:across + crop_size, o:o + crop_size],
            lambda o=off: frames[:, o:o + crop_size, across:across + crop_size]))
    return tf.stack(crops)


def random_flip(frames: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, mode: str,
                pairs: Sequence[tuple[int, int]] = ()) -> tuple[tf.Tensor, tf.Tensor]:
    """Horizontal flip with probability 1/2 according to `mode`:
    "never"; "always" (label unchanged); "swap_pairs" (a flipped clip of a class in `pairs` takes
    the other class of its pair); "except_pairs" (clips of classes in `pairs` are never flipped)."""
    if mode not in FLIP_MODES:
        raise ValueError(f"flip mode must be one of {FLIP_MODES}, got {mode!r}")
    if mode == "never":
        return frames, label
    flip = tf.random.stateless_uniform((), seed=seed) < 0.5
    partner = tf.constant([[a, b] for a, b in pairs] + [[b, a] for a, b in pairs] or
                          [[-1, -1]], tf.int64)
    in_pairs = tf.reduce_any(tf.equal(partner[:, 0], tf.cast(label, tf.int64)))
    if mode == "except_pairs":
        flip = tf.logical_and(flip, tf.logical_not(in_pairs))
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
    if mode == "swap_pairs":
        match = tf.equal(partner[:, 0], tf.cast(label, tf.int64))
        swapped = tf.cast(tf.reduce_max(tf.where(match, partner[:, 1], -1)), label.dtype)
        label = tf.where(tf.logical_and(flip, in_pairs), swapped, label)
    return frames, label


def normalize(frames: tf.Tensor) -> tf.Tensor:
    """uint8-range pixels -> ImageNet-normalised float32."""
    x = tf.cast(frames, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
