"""Decoding, crops, flips with label swap, normalisation."""

import numpy as np
import pytest
import tensorflow as tf

from rubiks_jax.data import transforms


def _clip(t=4, h=20, w=30):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (t, h, w, 3)).astype(np.uint8)


def test_decode_only_sampled_frames():
    clip = _clip()
    encoded = tf.stack([tf.io.encode_png(f) for f in clip])
    out = transforms.decode_frames(encoded, tf.constant([3, 1])).numpy()
    np.testing.assert_array_equal(out, clip[[3, 1]])


def test_multi_scale_crop_sizes_and_consistency_over_frames():
    clip = np.repeat(_clip(1), 3, axis=0)  # identical frames must stay identical
    for s in range(30):
        out = transforms.multi_scale_crop(tf.constant(clip), 16, tf.constant([s, 0])).numpy()
        assert out.shape == (3, 16, 16, 3)
        np.testing.assert_array_equal(out[0], out[2])


def test_multi_scale_crop_uses_the_scales():
    frames = tf.reshape(tf.range(100 * 100, dtype=tf.float32), (1, 100, 100, 1))
    frames = tf.tile(frames, (1, 1, 1, 3))
    seen = set()
    for s in range(200):
        out = transforms.multi_scale_crop(frames, 100, tf.constant([s, 1])).numpy()
        # Resizing a crop of k pixels back to 100: the span of the first row tells k.
        seen.add(int(round(out[0, 0, -1, 0] - out[0, 0, 0, 0])))
    assert len(seen) >= 3


def test_centre_and_three_crops():
    clip = _clip(h=20, w=30)
    c = transforms.centre_crop(tf.constant(clip), 10).numpy()
    np.testing.assert_array_equal(c, clip[:, 5:15, 10:20])
    three = transforms.three_crops(tf.constant(clip), 20).numpy()
    assert three.shape == (3, 4, 20, 20, 3)
    np.testing.assert_allclose(three[0], clip[:, :, :20], atol=1e-4)   # left, full height
    np.testing.assert_allclose(three[2], clip[:, :, 10:], atol=1e-4)   # right
    np.testing.assert_allclose(three[1], clip[:, :, 5:25], atol=1e-4)  # centre
    # The published 2-clip crops: frames resized to a larger short side (here the clip's own 20),
    # crops of 10 at the left, centre and right, vertically centred.
    official = transforms.three_crops(tf.constant(clip), 10, short_side=20).numpy()
    assert official.shape == (3, 4, 10, 10, 3)
    np.testing.assert_allclose(official[0], clip[:, 5:15, :10], atol=1e-4)
    np.testing.assert_allclose(official[1], clip[:, 5:15, 10:20], atol=1e-4)
    np.testing.assert_allclose(official[2], clip[:, 5:15, 20:], atol=1e-4)
    portrait = np.swapaxes(clip, 1, 2)  # (T, 30, 20): crops along the height, centred across
    tall = transforms.three_crops(tf.constant(portrait), 10, short_side=20).numpy()
    np.testing.assert_allclose(tall[2], portrait[:, 20:, 5:15], atol=1e-4)


@pytest.mark.parametrize("mode", transforms.FLIP_MODES)
def test_flip_modes_and_label_swap(mode):
    clip = tf.constant(_clip())
    pairs = [(0, 1), (6, 7)]
    flipped_labels = {}
    for label in (0, 1, 6, 7, 3):
        outs = set()
        for s in range(40):
            frames, new = transforms.random_flip(clip, tf.constant(label), tf.constant([s, 9]),
                                                 mode, pairs)
            is_flipped = not np.array_equal(frames.numpy(), clip.numpy())
            if is_flipped:
                np.testing.assert_array_equal(frames.numpy(), clip.numpy()[:, :, ::-1])
            outs.add((is_flipped, int(new)))
        flipped_labels[label] = outs
    partner = {0: 1, 1: 0, 6: 7, 7: 6}
    for label, outs in flipped_labels.items():
        flips = {f for f, _ in outs}
        if mode == "never" or (mode == "except_pairs" and label in partner):
            assert outs == {(False, label)}
        else:
            assert flips == {True, False}
        if mode == "swap_pairs" and label in partner:
            assert outs == {(False, label), (True, partner[label])}
        elif mode != "swap_pairs":
            assert {lab for _, lab in outs} == {label}


def test_normalize():
    x = transforms.normalize(tf.fill((1, 1, 1, 3), 255.0)).numpy()[0, 0, 0]
    np.testing.assert_allclose(x, (1 - np.array(transforms.IMAGENET_MEAN)) /
                               np.array(transforms.IMAGENET_STD), rtol=1e-6)
