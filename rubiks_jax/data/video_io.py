"""Reading a video from disk, the same way for the builders (training data) and for prediction:
a folder of frame images (natural order: frame_2 before frame_10) or a video file split into JPEG
frames by ffmpeg.

Frames are decoded by `transforms.decode_frames`, the decoder of the input pipeline, so a video
read here has the pixels that training saw.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import tensorflow as tf
from etils import epath

from rubiks_jax.data import transforms

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # matched case-insensitively
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")

PathLike = str | os.PathLike


class FfmpegNotFoundError(RuntimeError):
    """A video file needs ffmpeg to be split into frames and ffmpeg is not on PATH."""


def _natural_key(name: str) -> list:
    # "frame_2.jpg" before "frame_10.jpg"; identical to plain sorting for zero-padded names.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: PathLike) -> list[str]:
    """Paths of a folder's frame images (FRAME_SUFFIXES), sorted by file name with numbers by value.

    Raises FileNotFoundError naming the folder when it holds no frame image.
    """
    folder = epath.Path(folder)
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise FileNotFoundError(
            f"Frame folder {os.fspath(folder)} holds no {'/'.join(FRAME_SUFFIXES)} frames.")
    return [os.fspath(p) for p in sorted(frames, key=lambda p: _natural_key(p.name))]


def video_file_to_jpegs(path: PathLike, jpeg_quality: int = 2) -> list[bytes]:
    """Every frame of a video file as JPEG bytes, decoded by ffmpeg.

    jpeg_quality is ffmpeg's -q:v (2 = high quality, 31 = lowest). Frames are passed through one
    for one (no frame-rate conversion).
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FfmpegNotFoundError(
            f"Cannot read the video file {os.fspath(path)}: ffmpeg is not on PATH. Install ffmpeg "
            "(e.g. `apt-get install ffmpeg` or `conda install ffmpeg`) or extract the videos to JPEG "
            "frame folders as the builder's MANUAL_DOWNLOAD_INSTRUCTIONS describe.")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.fspath(path)
        if not os.path.isfile(local):  # not on the local file system (e.g. gs://): copy it first
            local = os.path.join(tmp, "input" + epath.Path(path).suffix)
            epath.Path(local).write_bytes(epath.Path(path).read_bytes())
        out_dir = os.path.join(tmp, "frames")
        os.mkdir(out_dir)
        def run(passthrough: list[str]):
            cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", local, "-map", "0:v:0",
                   *passthrough, "-q:v", str(jpeg_quality), "-f", "image2",
                   os.path.join(out_dir, "%08d.jpg")]
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)

        # One output frame per decoded frame: -fps_mode (ffmpeg >= 5.1), else the older -vsync.
        result = run(["-fps_mode", "passthrough"])
        if result.returncode != 0 and b"fps_mode" in result.stderr:
            result = run(["-vsync", "0"])
        if result.returncode != 0:
            raise ValueError(f"ffmpeg could not decode {os.fspath(path)} (exit {result.returncode}): "
                             + result.stderr.decode("utf-8", "replace").strip())
        names = sorted(os.listdir(out_dir))  # zero-padded by the %08d pattern
        if not names:
            raise ValueError(f"ffmpeg decoded no frames from {os.fspath(path)}.")
        frames = []
        for name in names:
            with open(os.path.join(out_dir, name), "rb") as f:
                frames.append(f.read())
    return frames


def encoded_frames(path: PathLike) -> list[bytes]:
    """The encoded frames (T,) of a frame folder (the image files as they are) or a video file
    (JPEG from ffmpeg), in frame order."""
    path = epath.Path(path)
    if path.is_dir():
        return [epath.Path(p).read_bytes() for p in list_frame_files(path)]
    if not path.exists():
        raise FileNotFoundError(f"{os.fspath(path)}: no such video file or frame folder")
    return video_file_to_jpegs(path)


def read_video(path: PathLike) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a video file or a frame folder."""
    encoded = tf.constant(encoded_frames(path))
    return transforms.decode_frames(encoded, tf.range(tf.shape(encoded)[0])).numpy()
