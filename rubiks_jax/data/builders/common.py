"""What the video builders share: the feature schema with class names read from the manual data,
locating the manual files (with errors that name the missing path), listing the frames of a
folder and turning a video file into JPEG frames with ffmpeg.

Every builder stores each example as {"video": (T,) encoded JPEG frames, "label", "video_id"}
(`rubiks_jax.data.features.video_features`). Extracted JPEG frames are stored as they are, without
re-encoding; video files are split into JPEG frames by ffmpeg.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds
from etils import epath

from rubiks_jax.data.features import video_features

logger = logging.getLogger("rubiks_jax.data.builders")

FRAME_SUFFIXES = (".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")


class ManualDataError(FileNotFoundError):
    """The manual data of a builder is missing or not laid out as its instructions say."""


class FfmpegNotFoundError(RuntimeError):
    """A video file needs ffmpeg to be split into frames and ffmpeg is not on PATH."""


# ------------------------------------------------------------------------------------------------
# Schema


def deferred_video_features() -> tfds.features.FeaturesDict:
    """The schema of `video_features` with a ClassLabel whose names are not known yet.

    The class names live in the manual data (a labels file, split files, folder names), which is
    only known in `_split_generators`; `set_label_names` fills them in there and TFDS stores them
    with the prepared data (label.labels.txt), from where a later `tfds.builder` restores them.
    """
    schema = video_features([], encoding_format="jpeg")
    return tfds.features.FeaturesDict({
        name: (tfds.features.ClassLabel() if name == "label" else feature)
        for name, feature in schema.items()
    })


def set_label_names(info: tfds.core.DatasetInfo, names: Sequence[str]) -> None:
    info.features["label"].names = list(names)


# ------------------------------------------------------------------------------------------------
# Locating the manual data


def manual_data_error(message: str, instructions: str) -> ManualDataError:
    """The error to raise, `message` followed by the builder's instructions."""
    return ManualDataError(f"{message} See the builder's MANUAL_DOWNLOAD_INSTRUCTIONS:\n{instructions.strip()}")


def resolve_manual_dir(dl_manager, instructions: str) -> epath.Path:
    """`dl_manager.manual_dir`, raising ManualDataError (naming the folder) when it is missing."""
    try:
        return epath.Path(dl_manager.manual_dir)
    except AssertionError as err:  # what TFDS raises for a missing or empty manual_dir
        path = getattr(dl_manager, "_manual_dir", None)
        raise manual_data_error(
            f"Manual data folder {os.fspath(path) if path else '(not set)'} does not exist or is "
            "empty. Pass it with tfds.download.DownloadConfig(manual_dir=...) (default "
            "<data_dir>/downloads/manual).", instructions) from err


def require(path: epath.Path, what: str, instructions: str) -> epath.Path:
    if not path.exists():
        raise manual_data_error(f"Missing {what}: {os.fspath(path)}.", instructions)
    return path


def first_existing(root: epath.Path, names: Iterable[str], what: str, instructions: str) -> epath.Path:
    """The first of root/name that exists; otherwise an error naming every candidate."""
    candidates = [root / name for name in names]
    for path in candidates:
        if path.exists():
            return path
    raise manual_data_error(
        f"Missing {what}: none of {', '.join(os.fspath(p) for p in candidates)} exists.", instructions)


def check_not_empty(split: str, count: int, where: str, instructions: str) -> None:
    if count == 0:
        raise manual_data_error(f"No videos found for split {split!r} (looked in {where}).", instructions)


def warn_missing(split: str, missing: Sequence[str], total: int) -> None:
    """One warning per split for the listed videos that were not found (they are skipped)."""
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning("Split %r: %d of %d listed videos were not found and are skipped (%s).",
                       split, len(missing), total, shown)


# ------------------------------------------------------------------------------------------------
# Frames and videos


def _natural_key(name: str):
    # "frame_2.jpg" before "frame_10.jpg"; identical to plain sorting for zero-padded names.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frames(folder: epath.Path) -> list[epath.Path]:
    """The JPEG frames of a folder (*.jpg / *.jpeg), sorted by file name (numbers by value)."""
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
    if not frames:
        raise ManualDataError(f"Frame folder {os.fspath(folder)} holds no .jpg/.jpeg frames.")
    return sorted(frames, key=lambda p: _natural_key(p.name))


def frame_paths(folder: epath.Path) -> list[str]:
    """Paths of a folder's frames; the Video feature stores their bytes as they are (no re-encode)."""
    return [os.fspath(p) for p in list_frames(folder)]


def read_video(path: epath.Path, jpeg_quality: int = 2) -> list[bytes]:
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
        names = sorted(os.listdir(out_dir))
        if not names:
            raise ValueError(f"ffmpeg decoded no frames from {os.fspath(path)}.")
        frames = []
        for name in names:
            with open(os.path.join(out_dir, name), "rb") as f:
                frames.append(f.read())
    return frames


def load_clip(path: epath.Path):
    """What the Video feature gets for one clip: frame paths for a frame folder, JPEG bytes for a
    video file."""
    return frame_paths(path) if path.is_dir() else read_video(path)
