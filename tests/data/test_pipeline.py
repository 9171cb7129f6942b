"""Input pipelines on the built-in synthetic data set (its "small" config)."""

import numpy as np
import pytest

from rubiks_jax.data import pipeline
from rubiks_jax.data.builders import synthetic


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    cfg = pipeline.DataConfig(name="rubiks_synthetic/small",
                              data_dir=str(tmp_path_factory.mktemp("tfds")))
    return pipeline.get_builder(cfg)


def _cfg(builder, **kw):
    base = dict(name="rubiks_synthetic/small", data_dir=builder.data_dir_root, num_frames=4,
                resize_short=32, crop_size=32, flip="swap_pairs", flip_pairs=synthetic.FLIP_PAIRS,
                shuffle_buffer=64)
    base.update(kw)
    return pipeline.DataConfig(**base)


def test_synthetic_is_generated_deterministically(builder):
    assert builder.info.splits["train"].num_examples == 36
    assert builder.info.splits["validation"].num_examples == 18
    assert builder.info.features["label"].names == list(synthetic.CLASSES)
    cfg = synthetic.RubiksSynthetic.BUILDER_CONFIGS[1]
    a = [ex for _, ex in synthetic.generate(0, cfg, 3)]
    b = [ex for _, ex in synthetic.generate(0, cfg, 3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["video"], y["video"])
        assert x["label"] == y["label"]
    assert sorted(np.bincount([ex["label"] for _, ex in synthetic.generate(0, cfg, 18)])) == [2] * 9


def _displacement(a: np.ndarray, b: np.ndarray, reach: int = 9) -> tuple[int, int]:
    """(x, y) integer shift that best maps frame a onto frame b (largest correlation, centre)."""
    a = a.mean(-1) - a.mean()
    b = b.mean(-1) - b.mean()
    m = reach
    scores = {(dx, dy): np.sum(a[m - dy:-m - dy or None, m - dx:-m - dx or None] * b[m:-m, m:-m])
              for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)}
    return max(scores, key=scores.get)


@pytest.mark.parametrize("label", range(len(synthetic.CLASSES)))
def test_each_class_slides_its_texture_in_its_direction_at_its_speed(label):
    name = synthetic.CLASSES[label]
    clip = synthetic.render_clip(np.random.default_rng(label), label, 8, 36).astype(np.float64)
    if name == "still":
        assert all(np.array_equal(clip[0], frame) for frame in clip)
        return
    low, high = synthetic.FAST_SPEEDS if name.startswith("fast") else synthetic.SLOW_SPEEDS
    direction = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[name.split("_")[1]]
    for k in range(7):  # every pair of consecutive frames: the whole texture moved alike
        dx, dy = _displacement(clip[k], clip[k + 1])
        assert (np.sign(dx), np.sign(dy)) == direction, (name, k, dx, dy)
        assert low - 0.5 <= abs(dx + dy) <= high + 0.5, (name, k, dx, dy)


def test_train_batches_and_exact_resume(builder):
    cfg = _cfg(builder)
    ds = pipeline.train_dataset(builder, cfg, 6, seed=3)
    it = iter(pipeline.tfds.as_numpy(ds))
    first = [next(it) for _ in range(4)]
    assert first[0]["video"].shape == (6, 4, 32, 32, 3) and first[0]["video"].dtype == np.float32
    assert first[0]["label"].dtype == np.int32
    assert abs(float(first[0]["video"].mean())) < 3
    resumed = next(iter(pipeline.tfds.as_numpy(pipeline.train_dataset(builder, cfg, 6, seed=3,
                                                                      start_step=3))))
    np.testing.assert_array_equal(resumed["video"], first[3]["video"])
    np.testing.assert_array_equal(resumed["label"], first[3]["label"])
    other = next(iter(pipeline.tfds.as_numpy(pipeline.train_dataset(builder, cfg, 6, seed=4))))
    assert not np.array_equal(other["video"], first[0]["video"])


@pytest.mark.parametrize("views, n_views", [("1clip", 1), ("2clip", 6), ("official_1clip", 1),
                                           ("official_2clip", 6)])
def test_eval_counts_every_example_once(builder, views, n_views):
    cfg = _cfg(builder)
    n = pipeline.eval_num_batches(builder, cfg, 8)
    batches = list(pipeline.padded_batches(pipeline.eval_dataset(builder, cfg, 8, views), 8, n))
    assert n == 3 and len(batches) == 3
    assert batches[0]["video"].shape == (8, n_views, 4, 32, 32, 3)
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert len(labels) == 18
    truth = [int(ex["label"]) for ex in pipeline.tfds.as_numpy(
        builder.as_dataset(split="validation", shuffle_files=False))]
    np.testing.assert_array_equal(labels, truth)


def test_process_shards_partition_the_split(builder):
    cfg = _cfg(builder, eval_split="validation")
    seen = []
    for p in range(4):
        ds = pipeline.eval_dataset(builder, cfg, 4, "1clip", process_index=p, process_count=4)
        n = pipeline.eval_num_batches(builder, cfg, 4, process_count=4)
        assert n == 2  # shards of 5, 5, 4, 4 examples: two batches of 4 each, padded
        seen += [b["label"][b["mask"]] for b in pipeline.padded_batches(ds, 4, n)]
    assert sum(len(s) for s in seen) == 18


def test_unprepared_foreign_data_set_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'ucf101/ucf101_1' is not prepared in .*tfds build"):
        pipeline.get_builder(pipeline.DataConfig(name="ucf101/ucf101_1", data_dir=str(tmp_path)))


def test_processes_split_each_global_train_batch_like_one_process_would(builder):
    """Two processes of 4 clips each see, in order, the two halves of the 8-clip global batch one
    process draws (same seed): the same examples and the same augmentation, from any step."""
    cfg = _cfg(builder)
    for start in (0, 3):
        whole = list(pipeline.tfds.as_numpy(pipeline.train_dataset(
            builder, cfg, 8, seed=5, start_step=start).take(3)))
        parts = [list(pipeline.tfds.as_numpy(pipeline.train_dataset(
            builder, cfg, 4, seed=5, start_step=start, process_index=p, process_count=2).take(3)))
            for p in range(2)]
        for k in range(3):
            for key in ("video", "label"):
                np.testing.assert_array_equal(
                    np.concatenate([parts[0][k][key], parts[1][k][key]]), whole[k][key])
