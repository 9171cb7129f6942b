"""Reading a video from disk, the same way for the builders (training data), for prediction and for
`rubiks_jax.data.prepare`: a folder of frame images or a video file decoded by ffmpeg.

The one home of ffmpeg here: where it is found (`ffmpeg_exe`: the system's, else the one that the
imageio-ffmpeg wheel ships) and how frames are cut from a video (`extract_frames`). Frames are
decoded by `transforms.decode_frames`, the decoder of the input pipeline, so a video read here has
the pixels that training saw.
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
FRAME_PATTERN = "img_%05d.jpg"  # what extract_frames writes (mmaction2's and TSM's naming)

PathLike = str | os.PathLike


class FfmpegNotFoundError(RuntimeError):
    """A video file needs ffmpeg and neither a system ffmpeg nor imageio-ffmpeg's is available."""


class VideoDecodeError(ValueError):
    """ffmpeg could not decode a video file; the message names the file and quotes ffmpeg."""


# ------------------------------------------------------------------------------------------------
# Frame folders

# A frame file's stem is a naming scheme followed by its number: "img_00001" -> ("img_", 1),
# "00001" -> ("", 1), "frame_1" -> ("frame_", 1).
_NUMBERED = re.compile(r"^(.*?)(\d+)$")
# Optical flow stored beside RGB frames: mmaction2's flow_x_00001.jpg / flow_y_00001.jpg, TSN's
# dense_flow x_00001.jpg / y_00001.jpg, and any other scheme that says "flow".
_FLOW_SCHEME = re.compile(r"flow|^[xy]_$")


def _natural_key(name: str) -> list:
    # "frame_2.jpg" before "frame_10.jpg"; identical to plain sorting for zero-padded names.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: PathLike) -> list[str]:
    """Paths of a folder's RGB frame images, in frame order.

    Frames are the FRAME_SUFFIXES files whose name is a scheme followed by a number (img_00001.jpg,
    00001.jpg, frame_1.png), sorted by that number (frame_2 before frame_10). Flow images
    (flow_x_*, flow_y_*, x_*, y_*, any scheme containing "flow") are ignored. Raises
    FileNotFoundError naming the folder when it holds no frame, ValueError when its frames mix two
    schemes (img_00001.jpg beside 00001.jpg: which is the video?), an image name has no number, or
    a number appears twice.
    """
    folder = epath.Path(folder)
    schemes: dict[str, list[tuple[int, epath.Path]]] = {}
    unnumbered = []
    for path in folder.iterdir():
        if path.suffix.lower() not in FRAME_SUFFIXES:
            continue
        match = _NUMBERED.match(path.stem)
        if match is None:
            unnumbered.append(path.name)
            continue
        scheme = match.group(1).lower()
        if not _FLOW_SCHEME.search(scheme):
            schemes.setdefault(scheme, []).append((int(match.group(2)), path))
    where = os.fspath(folder)
    if unnumbered:
        raise ValueError(f"Frame folder {where}: image names without a frame number "
                         f"({', '.join(sorted(unnumbered)[:3])}); frames are named like "
                         "img_00001.jpg, 00001.jpg or frame_1.jpg.")
    if not schemes:
        raise FileNotFoundError(f"Frame folder {where} holds no {'/'.join(FRAME_SUFFIXES)} frames.")
    if len(schemes) > 1:
        examples = ", ".join(sorted(min(frames)[1].name for frames in schemes.values()))
        raise ValueError(f"Frame folder {where} mixes {len(schemes)} frame naming schemes "
                         f"({examples}); keep one video's frames per folder.")
    (frames,) = schemes.values()
    frames.sort(key=lambda item: (item[0], _natural_key(item[1].name)))
    for (a, path_a), (b, path_b) in zip(frames, frames[1:]):
        if a == b:
            raise ValueError(f"Frame folder {where}: frame {a} appears twice ({path_a.name}, "
                             f"{path_b.name}).")
    return [os.fspath(path) for _, path in frames]


# ------------------------------------------------------------------------------------------------
# Video files


def ffmpeg_exe() -> str:
    """The ffmpeg to run: `ffmpeg` on PATH, else the binary of the imageio-ffmpeg wheel (the data
    extra's dependency, so a fresh machine decodes videos with nothing but pip)."""
    system = shutil.which("ffmpeg")
    if system is not None:
        return system
    try:
        import imageio_ffmpeg  # only when there is no system ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:  # not installed / no binary for this platform
        raise FfmpegNotFoundError(
            f"No ffmpeg: none on PATH and imageio-ffmpeg's is unavailable ({err}). Install the "
            "data extra (`pip install 'rubiks-jax[data]'`, which brings imageio-ffmpeg) or a system "
            "ffmpeg.") from err


def _scale_filter(short_side: int) -> str:
    # Shrinks so the short side is `short_side`, keeping the aspect ratio (-1: the other side
    # follows, rounded); a video whose short side is already at most that keeps its size (the
    # pipeline resizes at read time; upscaling here would only cost disk).
    s = int(short_side)
    return f"scale=w='if(lte(iw,ih),min({s},iw),-1)':h='if(lte(iw,ih),-1,min({s},ih))'"


def extract_frames(video: PathLike, out_dir: PathLike, *, short_side: int = 0,
                   fps: float | None = None, jpeg_quality: int = 2, threads: int = 0,
                   pattern: str = FRAME_PATTERN) -> int:
    """Writes the frames of a local video file into the existing folder out_dir as JPEGs named by
    `pattern` (img_00001.jpg, ...); returns how many.

    short_side > 0 shrinks frames so their short side is short_side (0 = native size); fps resamples
    to that frame rate (None = every decoded frame, one for one). jpeg_quality is ffmpeg's -q:v
    (2 = high, 31 = lowest); threads is ffmpeg's -threads (0 = its choice). Raises
    VideoDecodeError with ffmpeg's message when ffmpeg fails or writes no frame.
    """
    if os.path.getsize(video) == 0:  # ffmpeg would say "Invalid data" (or "moov atom not found")
        raise VideoDecodeError(f"{os.fspath(video)} is empty (0 bytes).")
    filters = ([f"fps={fps}"] if fps else []) + ([_scale_filter(short_side)] if short_side > 0 else [])

    def run(passthrough: list[str]) -> subprocess.CompletedProcess:
        cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-threads", str(threads),
               # "file:": a name with a colon is not a protocol; "%%": a "%" in the folder
               # name is not part of the output pattern.
               "-i", "file:" + os.path.abspath(video), "-map", "0:v:0",
               *(["-vf", ",".join(filters)] if filters else []),
               *passthrough, "-q:v", str(jpeg_quality), "-f", "image2",
               os.path.join(os.path.abspath(out_dir).replace("%", "%%"), pattern)]
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)

    ffmpeg = ffmpeg_exe()
    # One output frame per decoded (or fps-resampled) frame, no duplicates or drops: -fps_mode
    # (ffmpeg >= 5.1), else the older -vsync.
    result = run(["-fps_mode", "passthrough"])
    if result.returncode != 0 and b"fps_mode" in result.stderr:
        result = run(["-vsync", "0"])
    message = result.stderr.decode("utf-8", "replace").strip()
    if result.returncode != 0:
        raise VideoDecodeError(f"ffmpeg could not decode {os.fspath(video)} (exit "
                               f"{result.returncode}): {message}")
    count = sum(1 for name in os.listdir(out_dir) if name.lower().endswith(".jpg"))
    if count == 0:
        raise VideoDecodeError(f"ffmpeg decoded no frames from {os.fspath(video)}"
                               + (f": {message}" if message else "."))
    return count


def video_file_to_jpegs(path: PathLike, jpeg_quality: int = 2) -> list[bytes]:
    """Every frame of a video file as JPEG bytes, decoded by ffmpeg at native size and frame rate
    (`extract_frames` into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.fspath(path)
        if not os.path.isfile(local):  # not on the local file system (e.g. gs://): copy it first
            local = os.path.join(tmp, "input" + epath.Path(path).suffix)
            epath.Path(local).write_bytes(epath.Path(path).read_bytes())
        out_dir = os.path.join(tmp, "frames")
        os.mkdir(out_dir)
        extract_frames(local, out_dir, jpeg_quality=jpeg_quality)
        frames = []
        for name in list_frame_files(out_dir):
            with open(name, "rb") as f:
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
