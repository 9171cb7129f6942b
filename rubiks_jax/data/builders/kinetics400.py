"""Kinetics-400 from manually downloaded files (TFDS name `rubiks_kinetics400`)."""

from __future__ import annotations

import csv

import tensorflow_datasets as tfds

from rubiks_jax.data import video_io
from rubiks_jax.data.builders import common

_INSTRUCTIONS = """
Kinetics-400 (https://github.com/cvdfoundation/kinetics-dataset) is read from the manual folder
(tfds.download.DownloadConfig(manual_dir=...), default <data_dir>/downloads/manual), laid out in
one of two ways for each split (train; validate, whose folder or CSV may also be called "val"):

1. A folder per split, a folder per class inside:
     <split>/<class>/<video_id>.mp4       video files (.mp4, also .webm/.mkv/.avi; need ffmpeg), or
     <split>/<class>/<video_id>/*.jpg     extracted JPEG frames (sorted by file name).
2. The annotation CSV of the split next to one folder holding all the videos:
     <split>.csv     header "label,youtube_id,time_start,time_end,split" (more columns are ignored)
     videos/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4   (a frame folder of that name works too)
   Clips listed in a CSV whose video is missing (YouTube videos disappear) are skipped, with one
   warning per split giving their count.

The class names (the folder names or the CSV "label" column, over both splits) are sorted
alphabetically; use the same spelling in both splits.
"""

_SPLIT_NAMES = {"train": ("train",), "validate": ("validate", "val")}


def _clip_name(row: dict) -> str:
    start, end = (int(float(row[key])) for key in ("time_start", "time_end"))
    return f"{row['youtube_id']}_{start:06d}_{end:06d}"


def _read_csv(path) -> list[dict]:
    with path.open("r") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"label", "youtube_id", "time_start", "time_end"} <= set(rows[0]):
        raise common.ManualDataError(
            f"{path}: expected the columns label,youtube_id,time_start,time_end; got {list(rows[0])}.")
    return rows


def _folder_clips(split_dir) -> list[tuple[str, str, object]]:
    """(label, video_id, frame folder or video file) for <split>/<class>/<clip>."""
    clips = []
    for class_dir in sorted(split_dir.iterdir()):
        if not class_dir.is_dir():
            continue
        for clip in sorted(class_dir.iterdir()):
            if clip.is_dir():
                clips.append((class_dir.name, clip.name, clip))
            elif clip.suffix.lower() in video_io.VIDEO_SUFFIXES:
                clips.append((class_dir.name, clip.stem, clip))
    return clips


class RubiksKinetics400(tfds.core.GeneratorBasedBuilder):
    """Kinetics-400: 400 classes, clips stored as encoded JPEG frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Kinetics-400 video clips stored as JPEG frames.",
            features=common.deferred_video_features(),
            supervised_keys=("video", "label"),
            homepage="https://github.com/cvdfoundation/kinetics-dataset",
        )

    def _split_generators(self, dl_manager):
        root = common.resolve_manual_dir(dl_manager, _INSTRUCTIONS)
        clips, labels = {}, set()
        video_index = None
        for split, names in _SPLIT_NAMES.items():
            folder = next((root / n for n in names if (root / n).is_dir()), None)
            csv_path = next((root / f"{n}.csv" for n in names if (root / f"{n}.csv").exists()), None)
            if folder is not None:
                clips[split] = _folder_clips(folder)
                where = str(folder)
            elif csv_path is None:
                candidates = [str(root / n) + "/" for n in names] + [str(root / f"{n}.csv") for n in names]
                raise common.manual_data_error(
                    f"Missing Kinetics-400 {split} split: none of {', '.join(candidates)} exists.", _INSTRUCTIONS)
            else:
                if video_index is None:
                    video_index = self._index_videos(root)
                clips[split] = self._csv_clips(csv_path, video_index, split)
                where = f"{csv_path} and {root / 'videos'}"
            common.check_not_empty(split, len(clips[split]), where, _INSTRUCTIONS)
            labels.update(label for label, _, _ in clips[split])
        common.set_label_names(self.info, sorted(labels))
        return {split: self._generate_examples(items) for split, items in clips.items()}

    @staticmethod
    def _index_videos(root) -> dict:
        videos_dir = common.require(root / "videos", "Kinetics-400 video folder", _INSTRUCTIONS)
        index = {}
        for path in videos_dir.iterdir():
            if path.suffix.lower() in video_io.VIDEO_SUFFIXES:
                index.setdefault(path.stem, path)
            elif path.is_dir():
                index[path.name] = path  # a frame folder wins over a video file of the same name
        return index

    @staticmethod
    def _csv_clips(csv_path, video_index, split):
        rows = _read_csv(csv_path)
        clips, missing = [], []
        for row in rows:
            name = _clip_name(row)
            source = video_index.get(name)
            if source is None:
                missing.append(name)
            else:
                clips.append((row["label"], name, source))
        common.warn_missing(split, missing, len(rows))
        return clips

    def _generate_examples(self, items):
        for label, video_id, source in items:
            yield f"{label}/{video_id}", {"video": common.load_clip(source), "label": label,
                                          "video_id": video_id}
