"""TSN sampling indices."""

import numpy as np
import pytest
import tensorflow as tf

from rubiks_jax.data import sampling


def test_train_indices_one_per_segment():
    for n in (8, 16, 37, 300):
        for s in range(20):
            idx = sampling.train_indices(n, 8, tf.constant([s, 1])).numpy()
            seg = n / 8
            assert idx.shape == (8,)
            # Frame i covers [i, i + 1): it must overlap segment k, [k * seg, (k + 1) * seg).
            assert all(np.floor(k * seg) <= i < (k + 1) * seg for k, i in enumerate(idx)), (n, idx)


def test_train_indices_cover_segments_randomly_and_deterministically():
    draws = np.stack([sampling.train_indices(80, 8, tf.constant([s, 0])).numpy()
                      for s in range(200)])
    for k in range(8):  # every frame of every segment shows up
        assert set(draws[:, k]) == set(range(10 * k, 10 * k + 10))
    a = sampling.train_indices(80, 8, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(a, sampling.train_indices(80, 8, tf.constant([3, 4])).numpy())


def test_eval_indices_centres_and_starts():
    np.testing.assert_array_equal(sampling.eval_indices(80, 8, "centre"), [5, 15, 25, 35, 45, 55, 65, 75])
    np.testing.assert_array_equal(sampling.eval_indices(80, 8, "start"), [0, 10, 20, 30, 40, 50, 60, 70])
    np.testing.assert_array_equal(sampling.eval_indices(12, 8, "centre"), [0, 2, 3, 5, 6, 8, 9, 11])


def test_short_videos_repeat_frames():
    np.testing.assert_array_equal(sampling.eval_indices(3, 8, "start"), [0, 0, 0, 1, 1, 1, 2, 2])
    idx = sampling.train_indices(3, 8, tf.constant([0, 0])).numpy()
    assert idx.min() >= 0 and idx.max() <= 2 and np.all(np.diff(idx) >= 0)


def test_clip_indices_views():
    assert sampling.clip_indices(40, 4, "1clip").shape == (1, 4)
    two = sampling.clip_indices(40, 4, "2clip").numpy()
    np.testing.assert_array_equal(two, [[5, 15, 25, 35], [0, 10, 20, 30]])
    # The published code's view sets take the same frames.
    np.testing.assert_array_equal(sampling.clip_indices(40, 4, "official_2clip"), two)
    np.testing.assert_array_equal(sampling.clip_indices(40, 4, "official_1clip"), two[:1])
    with pytest.raises(ValueError, match="views must be one of"):
        sampling.clip_indices(40, 4, "3clip")
