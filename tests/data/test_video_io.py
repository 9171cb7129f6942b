"""Reading videos: frame order, frame suffixes, errors that name the path, frames read back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

from rubiks_jax.data import video_io  # noqa: E402

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


def test_video_file_needs_ffmpeg(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not really a video")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    with pytest.raises(video_io.FfmpegNotFoundError, match=r"clip\.mp4.*ffmpeg"):
        video_io.read_video(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_video_file_read_back(tmp_path):
    values = 20 * np.arange(11)
    for i, v in enumerate(values):
        Image.fromarray(frame(v)).save(tmp_path / f"{i:03d}.png")
    path = tmp_path / "clip.avi"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-framerate", "5", "-i",
                    str(tmp_path / "%03d.png"), "-c:v", "mjpeg", "-q:v", "1", str(path)], check=True)
    video = video_io.read_video(path)
    assert video.shape == (11, SIZE, SIZE, 3) and video.dtype == np.uint8
    diff = np.abs(video.astype(int) - np.stack([frame(v) for v in values]).astype(int))
    assert diff.mean() < 3 and diff.max() <= 12  # MJPEG, then JPEG again by ffmpeg
