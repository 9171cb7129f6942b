"""The SSv2, HMDB51 and Kinetics-400 builders on tiny frame-folder fixtures written in the layouts
they read (tests/data/test_prepare.py makes them from videos in the official layouts)."""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from rubiks_jax.data import builders  # noqa: E402  (registers the builders)
from rubiks_jax.data.builders import common  # noqa: E402

SIZE = 16


# ------------------------------------------------------------------------------------------------
# Fixture helpers


def clip_pixels(seed: int, num_frames: int) -> np.ndarray:
    """A smooth (T, 16, 16, 3) uint8 clip, different for each seed and frame (JPEG keeps it well)."""
    base = (13 * seed + 17 * np.arange(num_frames)) % 100  # per frame, no wrap inside a frame
    x = np.arange(SIZE)[None, None, :, None]
    channel = np.array([0, 40, 80])[None, None, None, :]
    clip = 20 + base[:, None, None, None] + 2 * x + channel  # at most 229
    return np.broadcast_to(clip, (num_frames, SIZE, SIZE, 3)).astype(np.uint8)


def write_frames(folder, pixels: np.ndarray) -> list[bytes]:
    """Writes frames 1.jpg, 2.jpg, ... (unpadded on purpose: 10.jpg must sort after 9.jpg)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = []
    for i, frame in enumerate(pixels, start=1):
        data = tf.io.encode_jpeg(frame, quality=95).numpy()
        (folder / f"{i}.jpg").write_bytes(data)
        encoded.append(data)
    return encoded


def prepare(name, data_dir, manual_dir, config=None):
    builder = tfds.builder(name, data_dir=str(data_dir), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder


def read_split(builder, split, skip_decoding=False):
    decoders = {"video": tfds.decode.SkipDecoding()} if skip_decoding else None
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    return {ex["video_id"].decode(): ex for ex in tfds.as_numpy(ds)}


def check_clip(example, pixels, encoded=None):
    video = example["video"]
    assert video.shape == pixels.shape and video.dtype == np.uint8
    diff = np.abs(video.astype(int) - pixels.astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 4  # quality-95 JPEG of a smooth pattern
    if encoded is not None:  # frames stored as written: decoding gives the written JPEGs' pixels
        np.testing.assert_array_equal(video, np.stack([tf.io.decode_jpeg(e).numpy() for e in encoded]))


def check_skip_decoding(builder, split, written: dict[str, list[bytes]]):
    for video_id, ex in read_split(builder, split, skip_decoding=True).items():
        assert ex["video"].dtype == object and ex["video"].ndim == 1
        assert list(ex["video"]) == written[video_id]  # JPEG bytes passed through, not re-encoded


# ------------------------------------------------------------------------------------------------
# Something-Something-V2


SSV2_LABELS = {"Pushing something from left to right": "0", "Holding something": "1",
               "Putting something next to something": "2"}
SSV2_SPLITS = {
    "train": [("11", "Holding [something]", 3), ("12", "Putting [something] next to [something]", 4),
              ("13", "Pushing [something] from left to right", 5)],
    "validation": [("21", "Putting [something] next to [something]", 3), ("22", "Holding [something]", 12)],
}


def write_ssv2(root, short_names=False):
    prefix = "" if short_names else "something-something-v2-"
    root.mkdir(parents=True)
    (root / f"{prefix}labels.json").write_text(json.dumps(SSV2_LABELS))
    written, pixels = {}, {}
    for split, clips in SSV2_SPLITS.items():
        entries = []
        for video_id, template, num_frames in clips:
            entries.append({"id": video_id, "template": template, "label": template.lower(),
                            "placeholders": ["a cup"]})
            pixels[video_id] = clip_pixels(int(video_id), num_frames)
            written[video_id] = write_frames(root / "frames" / video_id, pixels[video_id])
        (root / f"{prefix}{split}.json").write_text(json.dumps(entries))
    return written, pixels


def test_ssv2_frames_layout(tmp_path):
    written, pixels = write_ssv2(tmp_path / "manual")
    builder = prepare("rubiks_ssv2", tmp_path / "data", tmp_path / "manual")
    names = builder.info.features["label"].names
    assert names == ["Pushing something from left to right", "Holding something",
                     "Putting something next to something"]  # ordered by index in the labels file
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 2
    for split, clips in SSV2_SPLITS.items():
        examples = read_split(builder, split)
        assert sorted(examples) == sorted(c[0] for c in clips)
        for video_id, template, _ in clips:
            ex = examples[video_id]
            assert names[ex["label"]] == template.replace("[", "").replace("]", "")
            check_clip(ex, pixels[video_id], written[video_id])
        check_skip_decoding(builder, split, written)
    # A builder made afresh on the prepared data gets the class names back from disk.
    again = tfds.builder("rubiks_ssv2", data_dir=str(tmp_path / "data"))
    assert again.info.features["label"].names == names


def test_ssv2_short_file_names_and_template_mapping(tmp_path):
    write_ssv2(tmp_path / "manual", short_names=True)
    builder = prepare("rubiks_ssv2", tmp_path / "data", tmp_path / "manual")
    label = builder.info.features["label"]
    examples = read_split(builder, "train")
    assert label.int2str(examples["12"]["label"]) == "Putting something next to something"
    assert examples["13"]["label"] == 0 and examples["11"]["label"] == 1
    assert builder.info.splits["validation"].num_examples == 2


def test_ssv2_missing_labels_file(tmp_path):
    write_ssv2(tmp_path / "manual")
    (tmp_path / "manual" / "something-something-v2-labels.json").unlink()
    with pytest.raises(builders.ManualDataError, match="something-something-v2-labels.json") as err:
        prepare("rubiks_ssv2", tmp_path / "data", tmp_path / "manual")
    assert "MANUAL_DOWNLOAD_INSTRUCTIONS" in str(err.value)


# ------------------------------------------------------------------------------------------------
# HMDB51


HMDB_SPLITS = {  # class -> video -> (split1, split2, split3) membership code
    "brush_hair": {"hair_a": "122", "hair_b": "211", "hair_c": "120"},
    "clap": {"clap_a": "121", "clap_b": "212"},
}
HMDB_FRAMES = {"hair_a": 3, "hair_b": 4, "hair_c": 5, "clap_a": 4, "clap_b": 3}


def write_hmdb51(root, with_frames=True):
    splits_dir = root / "testTrainMulti_7030_splits"
    splits_dir.mkdir(parents=True)
    written, pixels = {}, {}
    for label, videos in HMDB_SPLITS.items():
        for k in range(3):
            lines = [f"{name}.avi {codes[k]} " for name, codes in videos.items()]
            (splits_dir / f"{label}_test_split{k + 1}.txt").write_text("\n".join(lines) + "\n")
        for i, name in enumerate(videos):
            pixels[name] = clip_pixels(len(written) + i, HMDB_FRAMES[name])
            if with_frames:
                written[name] = write_frames(root / "frames" / label / name, pixels[name])
    return written, pixels


def expected_hmdb(k: int, code: str) -> set[str]:
    return {name for videos in HMDB_SPLITS.values() for name, codes in videos.items() if codes[k] == code}


def test_hmdb51_split_configs(tmp_path):
    written, pixels = write_hmdb51(tmp_path / "manual")
    seen = {}
    for k in range(3):
        builder = prepare("rubiks_hmdb51", tmp_path / "data", tmp_path / "manual", config=f"split{k + 1}")
        names = builder.info.features["label"].names
        assert names == ["brush_hair", "clap"]
        for split, code in (("train", "1"), ("test", "2")):
            examples = read_split(builder, split)
            assert set(examples) == expected_hmdb(k, code)
            assert builder.info.splits[split].num_examples == len(examples)
            for name, ex in examples.items():
                assert names[ex["label"]] == next(c for c, v in HMDB_SPLITS.items() if name in v)
                check_clip(ex, pixels[name], written[name])
            seen[(k, split)] = set(examples)
        if k == 0:
            check_skip_decoding(builder, "train", written)
    assert seen[(0, "train")] != seen[(1, "train")] and seen[(0, "test")] != seen[(1, "test")]
    assert "hair_c" not in seen[(2, "train")] | seen[(2, "test")]  # code 0: unused in split3


@pytest.mark.parametrize("where", ["videos", ""])
def test_hmdb51_refuses_video_files(tmp_path, where):
    # Raw videos where frames should be: an error naming the file and the prepare command (the
    # builder never runs ffmpeg), in the older videos/ layout and in the download's own.
    root = tmp_path / "manual"
    write_hmdb51(root, with_frames=False)
    for label, videos in HMDB_SPLITS.items():
        for name in videos:
            (root / where / label).mkdir(parents=True, exist_ok=True)
            (root / where / label / f"{name}.avi").write_bytes(b"not really a video")
    with pytest.raises(builders.ManualDataError,
                       match=r"(?s)hair_a\.avi is a video file.*rubiks_jax\.data\.prepare hmdb51"):
        prepare("rubiks_hmdb51", tmp_path / "data", root, config="split1")


# ------------------------------------------------------------------------------------------------
# Kinetics-400


def check_kinetics_split(builder, split, names, rows, pixels, written):
    """Every clip listed (with its video present) in the split's CSV, labelled and decoded right."""
    csv_name = {"train": "train", "validate": "val"}[split]
    examples = read_split(builder, split)
    expected = {f"{yt}_{s:06d}_{e:06d}": label for label, yt, s, e, n in rows[csv_name] if n}
    assert set(examples) == set(expected)
    for vid, ex in examples.items():
        assert names[ex["label"]] == expected[vid]
        check_clip(ex, pixels[vid], written[vid])


def test_kinetics_csv_layout_skips_missing(tmp_path, caplog):
    root = tmp_path / "manual"
    rows = {"train": [("riding a bike", "aaa", 0, 10, 3), ("abseiling", "bbb", 5, 15, 4),
                      ("abseiling", "gone", 1, 11, None)],  # no video: skipped with a warning
            "val": [("riding a bike", "ccc", 30, 40, 5), ("juggling", "ddd", 2, 12, 3)]}
    written, pixels = {}, {}
    for csv_name, entries in rows.items():
        root.mkdir(exist_ok=True)
        with (root / f"{csv_name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for label, yt, start, end, num_frames in entries:
                writer.writerow([label, yt, start, end, csv_name])
                if num_frames is not None:
                    vid = f"{yt}_{start:06d}_{end:06d}"
                    pixels[vid] = clip_pixels(len(pixels), num_frames)
                    written[vid] = write_frames(root / "videos" / vid, pixels[vid])
    with caplog.at_level(logging.WARNING, logger="rubiks_jax.data.builders"):
        builder = prepare("rubiks_kinetics400", tmp_path / "data", root)
    warnings = [r for r in caplog.records if r.name == "rubiks_jax.data.builders"]
    assert len(warnings) == 1 and "1 of 3" in warnings[0].getMessage()
    assert "gone_000001_000011" in warnings[0].getMessage()
    names = builder.info.features["label"].names
    assert names == ["abseiling", "juggling", "riding a bike"]
    assert builder.info.splits["train"].num_examples == 2
    assert builder.info.splits["validate"].num_examples == 2
    for split in ("train", "validate"):
        check_kinetics_split(builder, split, names, rows, pixels, written)
        check_skip_decoding(builder, split, written)


def test_kinetics_folder_layout(tmp_path):
    root = tmp_path / "manual"
    layout = {"train": {"abseiling": {"v1": 3, "v2": 4}, "juggling": {"v3": 5}},
              "validate": {"juggling": {"v4": 4}, "zumba": {"v5": 3}}}
    written, pixels = {}, {}
    for split, classes in layout.items():
        for label, clips in classes.items():
            for vid, num_frames in clips.items():
                pixels[vid] = clip_pixels(len(pixels), num_frames)
                written[vid] = write_frames(root / split / label / vid, pixels[vid])
    (root / "train" / "README.txt").write_text("not a class")  # stray files are ignored
    builder = prepare("rubiks_kinetics400", tmp_path / "data", root)
    names = builder.info.features["label"].names
    assert names == ["abseiling", "juggling", "zumba"]
    for split, classes in layout.items():
        examples = read_split(builder, split)
        expected = {vid: label for label, clips in classes.items() for vid in clips}
        assert set(examples) == set(expected)
        assert builder.info.splits[split].num_examples == len(expected)
        for vid, ex in examples.items():
            assert names[ex["label"]] == expected[vid]
            check_clip(ex, pixels[vid], written[vid])
        check_skip_decoding(builder, split, written)


def write_kinetics_csvs(root, rows: dict) -> None:
    """annotations/<name>.csv of {name: [(label, youtube_id, start, end, ...)]}."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for csv_name, entries in rows.items():
        with (root / "annotations" / f"{csv_name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writerows([label, yt, start, end, csv_name] for label, yt, start, end, *_ in entries)


def test_kinetics_official_layout(tmp_path):
    # cvdfoundation's layout: annotations/{train,val}.csv, clips flat in train/ (as downloaded) or
    # in val/<class>/ (as arrange_by_classes.py leaves them), frame folders in place of the videos.
    root = tmp_path / "manual"
    rows = {"train": [("riding a bike", "aaa", 0, 10, 3), ("abseiling", "bbb", 5, 15, 4),
                      ("abseiling", "gone", 1, 11, None)],
            "val": [("riding a bike", "ccc", 30, 40, 5), ("juggling", "ddd", 2, 12, 3)]}
    write_kinetics_csvs(root, rows)
    written, pixels = {}, {}
    for csv_name, entries in rows.items():
        for label, yt, start, end, num_frames in entries:
            if num_frames is not None:
                vid = f"{yt}_{start:06d}_{end:06d}"
                pixels[vid] = clip_pixels(len(pixels), num_frames)
                folder = root / "train" / vid if csv_name == "train" else root / "val" / label / vid
                written[vid] = write_frames(folder, pixels[vid])
    builder = prepare("rubiks_kinetics400", tmp_path / "data", root)
    names = builder.info.features["label"].names
    assert names == ["abseiling", "juggling", "riding a bike"]
    for split in ("train", "validate"):
        check_kinetics_split(builder, split, names, rows, pixels, written)


def test_kinetics_refuses_video_files(tmp_path):
    root = tmp_path / "manual"
    write_kinetics_csvs(root, {"train": [("abseiling", "aaa", 0, 10)],
                               "val": [("abseiling", "bbb", 0, 10)]})
    for split, yt in (("train", "aaa"), ("val", "bbb")):
        (root / split).mkdir()
        (root / split / f"{yt}_000000_000010.mp4").write_bytes(b"not really a video")
    with pytest.raises(builders.ManualDataError,
                       match=r"(?s)aaa_000000_000010\.mp4 is a video file.*prepare kinetics400"):
        prepare("rubiks_kinetics400", tmp_path / "data", root)


# ------------------------------------------------------------------------------------------------
# Shared


@pytest.mark.parametrize("name", ["rubiks_ssv2", "rubiks_hmdb51", "rubiks_kinetics400"])
def test_missing_manual_dir(tmp_path, name):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(builders.ManualDataError) as err:
        prepare(name, tmp_path / "data", missing)
    message = str(err.value)
    assert str(missing) in message and "MANUAL_DOWNLOAD_INSTRUCTIONS" in message


def test_kinetics_missing_split_names_candidates(tmp_path):
    write_frames(tmp_path / "manual" / "train" / "abseiling" / "v1", clip_pixels(0, 3))
    with pytest.raises(builders.ManualDataError, match="validate split") as err:
        prepare("rubiks_kinetics400", tmp_path / "data", tmp_path / "manual")
    for candidate in ("validate/", "val/", "annotations/validate.csv", "annotations/val.csv",
                      "validate.csv", "val.csv"):
        assert str(tmp_path / "manual" / candidate) in str(err.value)


def test_load_clip_sorts_numbers_by_value(tmp_path):
    from etils import epath

    for name in ("10.jpg", "9.jpg", "1.JPG", "notes.txt", "2.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in common.load_clip(epath.Path(tmp_path))] == ["1.JPG", "2.jpeg", "9.jpg", "10.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(builders.ManualDataError, match="no .jpg"):
        common.load_clip(epath.Path(tmp_path / "empty"))
    (tmp_path / "img_00001.jpg").write_bytes(b"x")  # a second naming scheme beside 1.jpg, ...
    with pytest.raises(builders.ManualDataError, match="mixes 2 frame naming schemes"):
        common.load_clip(epath.Path(tmp_path))
