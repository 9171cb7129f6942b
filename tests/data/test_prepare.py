"""python -m rubiks_jax.data.prepare on tiny downloads in each official layout (real video files):
what it writes, that the builders read it, reruns, interrupted and broken clips, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from rubiks_jax.data import prepare, video_io  # noqa: E402
from rubiks_jax.data import builders  # noqa: E402,F401  (registers the builders)
from tests.data import videos  # noqa: E402

SHORT_SIDE = 16  # the fixtures' 20x28 frames become 16x22
BUILDERS = {"ssv2": ("rubiks_ssv2", None, "train", "validation"),
            "kinetics400": ("rubiks_kinetics400", None, "train", "validate"),
            "hmdb51": ("rubiks_hmdb51", "split1", "train", "test"),
            "ucf101": ("rubiks_ucf101", "split1", "train", "test")}
MAKERS = {"ssv2": videos.make_ssv2, "kinetics400": videos.make_kinetics,
          "hmdb51": videos.make_hmdb51, "ucf101": videos.make_ucf101}


def run(dataset, src, dst, **kw) -> prepare.Report:
    return prepare.prepare(dataset, src, dst, workers=2, short_side=SHORT_SIDE, progress=False, **kw)


def build(dataset, dst, data_dir):
    name, config, *_ = BUILDERS[dataset]
    builder = tfds.builder(name, config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(dst), compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder


def expected_frames(num_frames: int, seed: int) -> np.ndarray:
    """The fixture clip as prepare should store it: shrunk to short side 16 (ffmpeg's bicubic
    against TF's bilinear here: close on a smooth pattern)."""
    frames = videos.pattern(num_frames, *videos.SIZE, seed=seed)
    return tf.cast(tf.round(tf.image.resize(frames, (16, 22))), tf.uint8).numpy()


def check_built(builder, dataset, clips: dict[str, tuple[str, int]]):
    """Every example: its class, its frame count and size, pixels close to the written video."""
    _, _, train, evaluation = BUILDERS[dataset]
    names = builder.info.features["label"].names
    seen = {}
    for split in (train, evaluation):
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            video_id = ex["video_id"].decode()
            label, num_frames = clips[video_id]
            assert names[ex["label"]] == label
            seed = list(clips).index(video_id)
            expected = expected_frames(num_frames, seed)
            assert videos.close(ex["video"], expected, mean=3, worst=12)  # measured: 1.8, 5
            seen[video_id] = split
    return seen


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_official_layout_to_builder(tmp_path, dataset):
    clips = MAKERS[dataset](tmp_path / "raw")
    report = run(dataset, tmp_path / "raw", tmp_path / "prepared")
    assert (report.prepared, report.already_prepared, report.failed) == (len(clips), 0, [])
    assert not (tmp_path / "prepared" / prepare.TMP_DIR).exists()
    saved = json.loads((tmp_path / "prepared" / prepare.REPORT_FILE).read_text())
    assert saved["prepared"] == len(clips) and saved["short_side"] == SHORT_SIDE

    seen = check_built(build(dataset, tmp_path / "prepared", tmp_path / "data"), dataset, clips)
    if dataset == "hmdb51":  # split 1 of the fixture: code 1 train, 2 test
        assert seen == {name: ("train" if code == "1" else "test")
                        for per_class in videos.HMDB51.values() for name, (code, _) in per_class.items()}
    else:
        assert set(seen) == set(clips)
    # A rerun finds every clip done and extracts nothing.
    again = run(dataset, tmp_path / "raw", tmp_path / "prepared")
    assert (again.prepared, again.already_prepared, again.failed) == (0, len(clips), [])


def test_kinetics_class_folders_and_replacements(tmp_path):
    # arrange_by_classes.py's layout (train/<class>/<clip>.mp4), and a replacement video for a
    # corrupted one: the replacement is what gets extracted.
    clips = videos.make_kinetics(tmp_path / "raw", flat=False)
    name = "aaaaaaaaaaa_000000_000010"
    (tmp_path / "raw" / "train" / "abseiling" / f"{name}.mp4").write_bytes(b"corrupted")
    videos.write_video(tmp_path / "raw" / "replacement" / "replacement_for_corrupted_k400" / name,
                       videos.pattern(3, *videos.SIZE, seed=0), "h264_mp4")
    report = run("kinetics400", tmp_path / "raw", tmp_path / "prepared")
    assert report.failed == [] and report.prepared == len(clips)
    assert (tmp_path / "prepared" / "train" / "abseiling" / name / "img_00003.jpg").exists()
    assert (tmp_path / "prepared" / "annotations" / "val.csv").exists()
    check_built(build("kinetics400", tmp_path / "prepared", tmp_path / "data"), "kinetics400", clips)


def test_broken_videos_are_reported_and_retried(tmp_path):
    clips = videos.make_hmdb51(tmp_path / "raw")
    (tmp_path / "raw" / "clap" / "clap_a.avi").write_bytes(b"not really a video")
    (tmp_path / "raw" / "brush_hair" / "hair_c.avi").write_bytes(b"")
    os.remove(tmp_path / "raw" / "clap" / "clap_b.avi")  # listed, never downloaded
    report = run("hmdb51", tmp_path / "raw", tmp_path / "prepared")
    assert report.prepared == len(clips) - 3 and report.missing == ["clap/clap_b.avi"]
    failed = {os.path.basename(f["video"]): f["error"] for f in report.failed}
    assert set(failed) == {"clap_a.avi", "hair_c.avi"}
    assert "Invalid data" in failed["clap_a.avi"] and "is empty" in failed["hair_c.avi"]
    saved = json.loads((tmp_path / "prepared" / prepare.REPORT_FILE).read_text())
    by_path = ["hair_c.avi", "clap_a.avi"]  # brush_hair/ before clap/
    assert [os.path.basename(f["video"]) for f in saved["failed"]] == by_path
    assert not (tmp_path / "prepared" / "frames" / "clap" / "clap_a").exists()  # nothing half-made
    # The builder skips what failed (with a warning) and reads the rest.
    builder = build("hmdb51", tmp_path / "prepared", tmp_path / "data")
    assert builder.info.splits["train"].num_examples == 1  # hair_a
    # Fixed videos are picked up by a rerun; finished clips are not redone.
    videos.write_video(tmp_path / "raw" / "clap" / "clap_a", videos.pattern(4, *videos.SIZE),
                       "mpeg4_avi")
    again = run("hmdb51", tmp_path / "raw", tmp_path / "prepared")
    assert (again.prepared, again.already_prepared, len(again.failed)) == (1, len(clips) - 3, 1)


def test_interrupted_clip_is_redone(tmp_path):
    clips = videos.make_ucf101(tmp_path / "raw")
    run("ucf101", tmp_path / "raw", tmp_path / "prepared")
    # As an interrupted run leaves it: one clip only in the temporary folder, half written.
    folder = tmp_path / "prepared" / "frames" / "Archery" / "v_Archery_g08_c01"
    partial = prepare.tmp_folder(tmp_path / "prepared", "frames/Archery/v_Archery_g08_c01")
    partial.parent.mkdir()
    os.replace(folder, partial)
    os.remove(partial / "img_00005.jpg")
    again = run("ucf101", tmp_path / "raw", tmp_path / "prepared")
    assert (again.prepared, again.already_prepared) == (1, len(clips) - 1)
    assert len(video_io.list_frame_files(folder)) == 5 and not partial.parent.exists()


def test_other_options_on_a_prepared_folder_are_refused(tmp_path):
    videos.make_ucf101(tmp_path / "raw")
    run("ucf101", tmp_path / "raw", tmp_path / "prepared")
    with pytest.raises(ValueError, match="was prepared with"):
        prepare.prepare("ucf101", tmp_path / "raw", tmp_path / "prepared", short_side=32, progress=False)


def test_missing_annotations_name_the_paths(tmp_path):
    videos.make_ssv2(tmp_path / "raw")
    os.remove(tmp_path / "raw" / "labels" / "train.json")
    with pytest.raises(prepare.SourceLayoutError, match=r"train file.*labels/train\.json"):
        run("ssv2", tmp_path / "raw", tmp_path / "prepared")


def test_cli(tmp_path, capsys):
    clips = videos.make_hmdb51(tmp_path / "raw")
    (tmp_path / "raw" / "clap" / "clap_a.avi").write_bytes(b"not really a video")
    argv = ["hmdb51", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "prepared"),
            "--workers", "2", "--short-side", "16", "--fps", "5"]
    assert prepare.main(argv) == 1  # a clip failed
    out, err = capsys.readouterr()
    assert f"{len(clips) - 1} clips prepared, 0 already prepared, 1 failed" in out
    assert "clap_a.avi" in err and "Invalid data" in err
    options = json.loads((tmp_path / "prepared" / prepare.OPTIONS_FILE).read_text())
    assert options == {"dataset": "hmdb51", "short_side": 16, "fps": 5.0, "jpeg_quality": 2}
    nowhere = ["hmdb51", "--src", str(tmp_path / "nowhere"), "--dst", str(tmp_path / "x")]
    assert prepare.main(nowhere) == 2
    assert "does not exist" in capsys.readouterr().err
