"""Reading videos: frame order, naming schemes and flow images in frame folders, errors that name
the path; real encoded video files (several codecs and containers, odd sizes, 1 to 30 frames,
truncated and empty files) decoded by the ffmpeg that a pip install brings."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

from rubiks_jax.data import video_io  # noqa: E402
from tests.data import videos  # noqa: E402

SIZE = 8


def frame(value: int) -> np.ndarray:
    """An (8, 8, 3) uint8 frame, constant per channel, different for each value."""
    return np.broadcast_to(np.array([value, 255 - value, value // 2], np.uint8), (SIZE, SIZE, 3))


def test_natural_order_and_suffixes(tmp_path):
    for name in ("frame_10.png", "frame_2.jpg", "frame_1.BMP", "frame_3.JPEG", "frame_4.gif",
                 "notes.txt", "frame_5"):
        (tmp_path / name).write_bytes(b"x")
    names = [os.path.basename(p) for p in video_io.list_frame_files(tmp_path)]
    assert names == ["frame_1.BMP", "frame_2.jpg", "frame_3.JPEG", "frame_10.png"]
    assert video_io.list_frame_files(str(tmp_path)) == video_io.list_frame_files(tmp_path)


def test_empty_folder_error_names_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        video_io.list_frame_files(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        video_io.read_video(tmp_path)


def test_missing_path_error_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.mp4"))):
        video_io.read_video(tmp_path / "nope.mp4")


def test_frame_folder_read_back(tmp_path):
    # Lossless formats, unpadded numbers: frame_10 must come after frame_9.
    values = 20 * np.arange(11)
    for i, v in enumerate(values):
        Image.fromarray(frame(v)).save(tmp_path / f"frame_{i}.{'bmp' if i % 2 else 'png'}")
    video = video_io.read_video(tmp_path)
    assert video.shape == (11, SIZE, SIZE, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, np.stack([frame(v) for v in values]))


def test_naming_schemes_in_natural_order(tmp_path):
    for scheme, names in {"img": ["img_00010.jpg", "img_00002.jpg", "img_00001.jpg"],
                          "bare": ["00010.jpg", "00002.jpg", "00001.jpg"],
                          "frame": ["frame_10.jpg", "frame_2.jpg", "frame_1.jpg"]}.items():
        folder = tmp_path / scheme
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"x")
        listed = [os.path.basename(p) for p in video_io.list_frame_files(folder)]
        assert listed == names[::-1], scheme


def test_flow_images_are_ignored(tmp_path):
    # mmaction2's rawframes (img_ beside flow_x_/flow_y_) and TSN's dense_flow (x_/y_).
    for i in (1, 2, 10):
        for prefix in ("img_", "flow_x_", "flow_y_", "x_", "y_", "FLOW_"):
            (tmp_path / f"{prefix}{i:05d}.jpg").write_bytes(b"x")
    listed = [os.path.basename(p) for p in video_io.list_frame_files(tmp_path)]
    assert listed == ["img_00001.jpg", "img_00002.jpg", "img_00010.jpg"]
    only_flow = tmp_path / "only_flow"
    only_flow.mkdir()
    (only_flow / "flow_x_00001.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="holds no"):
        video_io.list_frame_files(only_flow)


@pytest.mark.parametrize("names, message", [
    (["img_00001.jpg", "img_00002.jpg", "00001.jpg", "00002.jpg"],
     r"mixes 2 frame naming schemes \(00001"),
    (["img_1.jpg", "img_01.png"], "frame 1 appears twice"),
    (["img_00001.jpg", "cover.jpg"], r"without a frame number \(cover.jpg"),
])
def test_ambiguous_folders_fail_clearly(tmp_path, names, message):
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=message) as err:
        video_io.list_frame_files(tmp_path)
    assert str(tmp_path) in str(err.value)


# ------------------------------------------------------------------------------------------------
# Video files


def test_ffmpeg_without_a_system_one_comes_from_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no system ffmpeg
    import imageio_ffmpeg

    assert video_io.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    frames = videos.pattern(4, 16, 16)
    video = video_io.read_video(videos.write_video(tmp_path / "clip", frames, "mjpeg_avi"))
    assert videos.close(video, frames)


def test_no_ffmpeg_at_all(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not really a video")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails: not installed
    with pytest.raises(video_io.FfmpegNotFoundError, match=r"imageio-ffmpeg"):
        video_io.read_video(path)


@pytest.mark.parametrize("codec", sorted(videos.CODECS))
def test_codecs_sizes_and_frame_counts(tmp_path, codec):
    if videos.CODECS[codec][0] not in videos.encoders():
        pytest.skip(f"this ffmpeg has no {videos.CODECS[codec][0]} encoder")
    for num_frames, height, width in ((1, 33, 47), (2, 16, 16), (7, 47, 33), (30, 20, 28)):
        frames = videos.pattern(num_frames, height, width, seed=num_frames)
        video = video_io.read_video(videos.write_video(tmp_path / f"clip{num_frames}", frames, codec))
        assert video.dtype == np.uint8 and video.shape == frames.shape, (codec, video.shape)
        assert videos.close(video, frames), codec  # measured: mean <= 1.9, max <= 7


def test_truncated_file(tmp_path):
    frames = videos.pattern(30, 20, 28)
    # A truncated Matroska file: the frames before the cut, in order.
    data = videos.write_video(tmp_path / "clip", frames, "h264_mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    video = video_io.read_video(cut)
    assert 1 <= len(video) < 30 and videos.close(video, frames[: len(video)])
    # A truncated MP4 lost its index (moov atom, written last): an error naming the file, quoting ffmpeg.
    data = videos.write_video(tmp_path / "clip", frames, "h264_mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(video_io.VideoDecodeError, match=re.escape(str(cut)) + r".*moov atom not found"):
        video_io.read_video(cut)


def test_zero_length_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(video_io.VideoDecodeError, match=re.escape(str(empty)) + r" is empty"):
        video_io.read_video(empty)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not really a video" * 10)
    with pytest.raises(video_io.VideoDecodeError,
                       match=re.escape(str(garbage)) + r" \(exit \d+\): .*Invalid data"):
        video_io.read_video(garbage)


def test_extract_frames_short_side_and_fps(tmp_path):
    frames = videos.pattern(20, 30, 46)  # 2 s at 10 fps
    path = videos.write_video(tmp_path / "clip", frames, "mjpeg_avi", fps=10)
    for name, kwargs, count, size in (("native", {}, 20, (46, 30)),
                                      ("small", {"short_side": 16}, 20, (25, 16)),
                                      ("larger", {"short_side": 64}, 20, (46, 30)),  # no upscaling
                                      ("fps", {"fps": 5, "short_side": 16}, 10, (25, 16))):
        out = tmp_path / name
        out.mkdir()
        assert video_io.extract_frames(path, out, **kwargs) == count
        listed = video_io.list_frame_files(out)
        assert [os.path.basename(p) for p in listed[:2]] == ["img_00001.jpg", "img_00002.jpg"]
        assert Image.open(listed[0]).size == size, name
    tall = videos.write_video(tmp_path / "tall", videos.pattern(2, 46, 30), "mjpeg_avi")
    (tmp_path / "tall_out").mkdir()
    video_io.extract_frames(tall, tmp_path / "tall_out", short_side=16)
    assert Image.open(video_io.list_frame_files(tmp_path / "tall_out")[0]).size == (16, 25)


def test_odd_file_names(tmp_path, monkeypatch):
    # HMDB51's names hold "#", "&", "(", "!"; ffmpeg would read "a:" as a protocol and "%d" in the
    # output folder as part of its frame pattern.
    folder = tmp_path / "out %05d"
    folder.mkdir()
    path = videos.write_video(folder / "x", videos.pattern(3, 16, 16), "mjpeg_avi")
    odd = folder / "a:b #20%03d&(1)!.avi"
    os.rename(path, odd)
    monkeypatch.chdir(folder)
    assert video_io.extract_frames(odd.name, folder, short_side=8) == 3
    assert sorted(os.listdir(folder))[:3] == ["a:b #20%03d&(1)!.avi", "img_00001.jpg", "img_00002.jpg"]
    assert video_io.read_video(odd.name).shape == (3, 16, 16, 3)
