"""Input pipelines over TFDS builders: TSN sampling, decoding of the sampled frames only,
augmentation, per-process sharding, batching.

Train batches: {"video": (B, T, S, S, 3) float32 normalised, "label": (B,) int32}; the stream is
deterministic from (seed, step): resuming at step k reproduces exactly the batches an uninterrupted
run would have seen (the skip happens before decoding, so it is cheap).
Eval batches: {"video": (B, V, T, S, S, 3), "label": (B,), "mask": (B,) bool}, V = 1 (1-clip) or
6 (2-clip x 3 crops); the last batch is padded with mask False, so every example of the process's
shard is seen exactly once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from rubiks_jax.data import sampling, transforms

# TF must not grab the accelerators that JAX uses.
tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set and how clips are cut from it.

    name: TFDS name with config, e.g. "rubiks_synthetic/default", "ucf101/ucf101_1:2.0.0",
      "rubiks_ssv2"; data_dir: TFDS data directory; manual_dir: where our real-data builders find
      the downloaded files.
    resize_short: short side before cropping (256 in the recipe); crop_size: model input side.
    flip: transforms.FLIP_MODES; flip_pairs: class pairs exchanged by a flip.
    """

    name: str
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    num_frames: int = 8
    resize_short: int = 256
    crop_size: int = 224
    flip: str = "always"
    flip_pairs: tuple[tuple[int, int], ...] = ()
    shuffle_buffer: int = 1024
    prepare: bool = True  # run download_and_prepare (ours generate or read manual_dir; no download)


def get_builder(cfg: DataConfig) -> tfds.core.DatasetBuilder:
    import rubiks_jax.data.builders  # noqa: F401  (registers our builders with TFDS)

    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    if not _is_prepared(builder):
        if not cfg.prepare or not cfg.name.startswith("rubiks_"):
            raise FileNotFoundError(
                f"data set {cfg.name!r} is not prepared in {builder.data_dir!r}: prepare it with "
                f"tensorflow-datasets first (e.g. `tfds build {cfg.name.split('/')[0]} "
                f"--data_dir {cfg.data_dir or '~/tensorflow_datasets'}`)")
        download_config = tfds.download.DownloadConfig(manual_dir=cfg.manual_dir)
        builder.download_and_prepare(download_config=download_config)
    return builder


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    try:
        return bool(builder.info.splits) and tf.io.gfile.exists(builder.data_dir)
    except Exception:  # an unprepared builder may fail to describe its splits
        return False


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
    return builder.info.features["label"].num_classes


def shard_split(split: str, process_index: int, process_count: int) -> str:
    """This process's part of `split` (contiguous, sizes differing by at most one example)."""
    if process_count == 1:
        return split
    return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


class EncodedFrames(tfds.decode.Decoder):
    """A video's encoded frames as they are stored, (n,) tf.string, for decode_frames to decode
    only the sampled ones. Like tfds.decode.SkipDecoding, but it hands the frames over whole:
    SkipDecoding maps an identity over them with tf.map_fn's deprecated `dtype` argument (and reads
    the deprecated TensorInfo.dtype), two deprecation warnings per pipeline and work for nothing."""

    @property
    def dtype(self) -> tf.DType:
        return tf.string

    def decode_example(self, serialized_example: tf.Tensor) -> tf.Tensor:
        return serialized_example

    def decode_batch_example(self, serialized_example: tf.Tensor) -> tf.Tensor:
        return serialized_example


def _read(builder, split: str, shuffle_files: bool = False) -> tf.data.Dataset:
    return builder.as_dataset(split=split, shuffle_files=shuffle_files,
                              decoders={"video": EncodedFrames()},
                              read_config=tfds.ReadConfig(shuffle_seed=0, try_autocache=False))


def train_dataset(builder, cfg: DataConfig, batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Infinite, shuffled, augmented train batches of `batch_size` (this process's share of a
    global batch of batch_size x process_count).

    Every process follows the same global stream of examples and keeps its contiguous slice of
    each global batch (process p: positions [p * batch_size, (p + 1) * batch_size)), chosen before
    decoding; so N processes see, device for device, the batches one process with all the devices
    would see, with the same augmentation.
    """
    ds = _read(builder, cfg.train_split).repeat()
    ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.enumerate().skip(start_step * batch_size * process_count)
    if process_count > 1:
        global_batch = batch_size * process_count
        ds = ds.filter(lambda index, _: (index % global_batch) // batch_size == process_index)

    def process(index, example):
        seed_ = tf.stack([tf.cast(seed, tf.int64), index])
        s_idx, s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed_, 3))
        encoded = example["video"]
        indices = sampling.train_indices(tf.shape(encoded)[0], cfg.num_frames, s_idx)
        frames = transforms.decode_frames(encoded, indices)
        frames = transforms.resize_short_side(frames, cfg.resize_short)
        frames = transforms.multi_scale_crop(frames, cfg.crop_size, s_crop)
        frames, label = transforms.random_flip(frames, example["label"], s_flip, cfg.flip,
                                               cfg.flip_pairs)
        video = transforms.normalize(frames)
        video = tf.ensure_shape(video, (cfg.num_frames, cfg.crop_size, cfg.crop_size, 3))
        return {"video": video, "label": tf.cast(label, tf.int32)}

    ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_views(encoded: tf.Tensor, cfg: DataConfig, views: str) -> tf.Tensor:
    """(V, T, S, S, 3) normalised test views of one video (V = 1 or 6) for a view set of
    sampling.VIEWS: one centre crop per clip (1-clip sets), or three crops along the long side per
    clip, from frames resized to short side S ("2clip") or to cfg.resize_short ("official_2clip")."""
    indices = sampling.clip_indices(tf.shape(encoded)[0], cfg.num_frames, views)
    single = len(sampling.CLIPS[views]) == 1
    out = []
    for c in range(indices.shape[0]):
        frames = transforms.decode_frames(encoded, indices[c])
        if single:
            crops = transforms.centre_crop(transforms.resize_short_side(frames, cfg.resize_short),
                                           cfg.crop_size)[None]
        else:
            short_side = cfg.resize_short if views == "official_2clip" else None
            crops = transforms.three_crops(frames, cfg.crop_size, short_side)
        out.append(crops)
    video = transforms.normalize(tf.concat(out, axis=0))
    n_views = 1 if single else 6
    return tf.ensure_shape(video, (n_views, cfg.num_frames, cfg.crop_size, cfg.crop_size, 3))


def eval_dataset(builder, cfg: DataConfig, batch_size: int, views: str = "1clip",
                 process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Unpadded eval batches (the last may be short); see `padded_batches`."""
    split = shard_split(cfg.eval_split, process_index, process_count)

    def process(example):
        return {"video": eval_views(example["video"], cfg, views),
                "label": tf.cast(example["label"], tf.int32)}

    ds = _read(builder, split).map(process, num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def eval_num_batches(builder, cfg: DataConfig, batch_size: int, process_count: int = 1) -> int:
    """Batches every process runs: enough for the largest shard, so all stay in step."""
    sizes = [builder.info.splits[shard_split(cfg.eval_split, i, process_count)].num_examples
             for i in range(process_count)]
    return max(1, math.ceil(max(sizes) / batch_size))


def padded_batches(ds: tf.data.Dataset, batch_size: int, num_batches: int) -> Iterator[dict]:
    """numpy batches of exactly `batch_size` with a "mask": real examples True, padding False;
    exactly `num_batches` of them (fully padded ones at the end if this shard is short)."""
    template = None
    produced = 0
    for batch in tfds.as_numpy(ds):
        n = batch["label"].shape[0]
        template = batch
        mask = np.zeros((batch_size,), bool)
        mask[:n] = True
        yield {"video": _pad(batch["video"], batch_size), "label": _pad(batch["label"], batch_size),
               "mask": mask}
        produced += 1
    if produced > num_batches:
        raise RuntimeError(f"eval shard produced {produced} batches, more than the {num_batches} "
                           "planned: split sizes changed under the run")
    while produced < num_batches:
        if template is None:
            raise RuntimeError("eval shard is empty on this process: cannot build padding")
        yield {"video": np.zeros((batch_size,) + template["video"].shape[1:],
                                 template["video"].dtype),
               "label": np.zeros((batch_size,), template["label"].dtype),
               "mask": np.zeros((batch_size,), bool)}
        produced += 1


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)])
