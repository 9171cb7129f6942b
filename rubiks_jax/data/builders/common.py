"""What the video builders share: the feature schema with class names read from the manual data,
locating the manual files (with errors that name the missing path) and loading one clip through
`rubiks_jax.data.video_io`.

Every builder stores each example as {"video": (T,) encoded frames, "label", "video_id"}
(`rubiks_jax.data.features.video_features`). The builders read frame folders only and store their
images as they are, without re-encoding: video files are turned into frame folders once, in
parallel, by `python -m rubiks_jax.data.prepare`, never while a data set is built (train.main
builds it on every host, one clip at a time).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence

import tensorflow_datasets as tfds
from etils import epath

from rubiks_jax.data import video_io
from rubiks_jax.data.features import video_features

logger = logging.getLogger("rubiks_jax.data.builders")

FRAMES_DIR = "frames"  # where prepare writes the frame folders of SSv2, HMDB51 and UCF101

# The closing paragraph of every builder's MANUAL_DOWNLOAD_INSTRUCTIONS.
PREPARE_INSTRUCTIONS = """
The builder reads frame folders only and never decodes a video file: where a clip's frames should
be and only its video is found, it raises an error naming `python -m rubiks_jax.data.prepare`. A
frame folder holds one clip's frames named like img_00001.jpg, 00001.jpg or frame_1.jpg (in natural
order: frame_2 before frame_10); optical flow images beside them (flow_x_*, flow_y_*) are ignored.
"""


@dataclasses.dataclass(eq=False)
class SplitConfig(tfds.core.BuilderConfig):
    """Which of a data set's three official train/test splits (HMDB51, UCF101) a builder reads."""

    split_number: int = 1


def split_configs() -> list[SplitConfig]:
    """BUILDER_CONFIGS split1, split2, split3."""
    return [SplitConfig(name=f"split{k}", split_number=k,
                        description=f"Official train/test split {k}.") for k in (1, 2, 3)]


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


def not_prepared_error(video: epath.Path, dataset: str) -> ManualDataError:
    """The error for a video file where a builder reads frame folders: names the file and the
    command that turns the download into frame folders."""
    return ManualDataError(
        f"{os.fspath(video)} is a video file, but the builder reads frame folders only (video files "
        f"are not decoded while a data set is built). Run\n  python -m rubiks_jax.data.prepare "
        f"{dataset} --src <the download folder> --dst <a new folder>\nonce and pass the new folder "
        "as the manual_dir (--config.data.manual_dir).")


def frames_or_video(frames: epath.Path, videos: Iterable[epath.Path], dataset: str
                    ) -> epath.Path | None:
    """The clip's frame folder if it exists, None if neither it nor any of its raw `videos` does;
    a raw video without frames raises `not_prepared_error`."""
    if frames.is_dir():
        return frames
    for video in videos:
        if video.exists():
            raise not_prepared_error(video, dataset)
    return None


def load_clip(path: epath.Path) -> list[str]:
    """What the Video feature gets for one clip: the paths of a frame folder's frames (the files
    are stored as they are). A missing or empty folder, a file, or a folder mixing frame naming
    schemes raises ManualDataError."""
    try:
        return video_io.list_frame_files(path)
    except (OSError, ValueError) as err:  # in a builder, bad manual data
        raise ManualDataError(str(err)) from err


def class_folder_examples(root: epath.Path, split: str, items: Sequence[tuple[str, str]],
                          video_roots: Sequence[str], dataset: str, instructions: str):
    """(key, example) of each listed (class, video file name) whose frames are in
    frames/<class>/<video name>/ (HMDB51, UCF101); a listed video found as <root>/<video root>/
    <class>/<name>.avi only raises `not_prepared_error`, one found nowhere is skipped (one warning
    per split)."""
    found, missing = [], []
    for label, file_name in items:
        name = file_name[:-4] if file_name.lower().endswith(".avi") else file_name
        videos = [root / where / label / f"{name}.avi" for where in video_roots]
        source = frames_or_video(root / FRAMES_DIR / label / name, videos, dataset)
        if source is None:
            missing.append(f"{label}/{name}")
        else:
            found.append((label, name, source))
    warn_missing(split, missing, len(items))
    check_not_empty(split, len(found), str(root / FRAMES_DIR), instructions)
    for label, name, source in found:
        yield f"{label}/{name}", {"video": load_clip(source), "label": label, "video_id": name}
