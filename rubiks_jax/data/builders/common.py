"""What the video builders share: the feature schema with class names read from the manual data,
locating the manual files (with errors that name the missing path) and loading one clip through
`rubiks_jax.data.video_io`.

Every builder stores each example as {"video": (T,) encoded frames, "label", "video_id"}
(`rubiks_jax.data.features.video_features`). Extracted frames are stored as they are, without
re-encoding; video files are split into JPEG frames by ffmpeg.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds
from etils import epath

from rubiks_jax.data import video_io
from rubiks_jax.data.features import video_features

logger = logging.getLogger("rubiks_jax.data.builders")


class ManualDataError(FileNotFoundError):
    """The manual data of a builder is missing or not laid out as its instructions say."""


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
# Clips


def load_clip(path: epath.Path) -> list[str] | list[bytes]:
    """What the Video feature gets for one clip: frame paths for a frame folder (the files are stored
    as they are), JPEG bytes for a video file. An empty frame folder raises ManualDataError."""
    if not path.is_dir():
        return video_io.video_file_to_jpegs(path)
    try:
        return video_io.list_frame_files(path)
    except FileNotFoundError as err:  # in a builder, an empty frame folder is bad manual data
        raise ManualDataError(str(err)) from err
