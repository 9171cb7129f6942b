"""Kinetics-400 from manually downloaded files (TFDS name `rubiks_kinetics400`)."""

from __future__ import annotations

import csv

import tensorflow_datasets as tfds

from rubiks_jax.data import video_io
from rubiks_jax.data.builders import common

_INSTRUCTIONS = f"""
Kinetics-400 (https://github.com/cvdfoundation/kinetics-dataset) is read from the manual folder
(tfds.download.DownloadConfig(manual_dir=...), default <data_dir>/downloads/manual), laid out in
one of these ways for each split (train; validate, whose folder or CSV may also be called "val"):

1. As the official download scripts leave it (k400/ of cvdfoundation's k400_downloader.sh and
   k400_extractor.sh), with a frame folder in place of each video:
     annotations/<split>.csv    header "label,youtube_id,time_start,time_end,split" (more columns
                                are ignored; <split>.csv beside the split folders works too)
     <split>/<youtube_id>_<time_start:06d>_<time_end:06d>/img_00001.jpg ...
   (<split>/<class>/<clip>/ folders, as arrange_by_classes.py leaves them, are found as well, and
   so is the older videos/<clip>/ folder for all splits.) Clips listed in a CSV without a frame
   folder (YouTube videos disappear, some fail to decode) are skipped, with one warning per split
   giving their count.
2. Without CSV files, a folder per split and a folder per class inside:
     <split>/<class>/<clip>/img_00001.jpg ...

`python -m rubiks_jax.data.prepare kinetics400 --src k400 --dst <manual folder>` writes either
layout from the same layout of videos (the CSV files copied, replacement/ videos used in place of
the corrupted ones they replace). The class names (the CSV "label" column or the folder names,
over both splits) are sorted alphabetically; use the same spelling in both splits.
{common.PREPARE_INSTRUCTIONS}"""

SPLIT_NAMES = {"train": ("train",), "validate": ("validate", "val")}  # split -> its folder/CSV names


def csv_path(root, split: str):
    """The annotation CSV of `split` (annotations/<name>.csv or <name>.csv), or None."""
    for name in SPLIT_NAMES[split]:
        for path in (root / "annotations" / f"{name}.csv", root / f"{name}.csv"):
            if path.exists():
                return path
    return None


def split_folder(root, split: str):
    """The folder of `split`'s clips (<name>/), or None."""
    return next((root / n for n in SPLIT_NAMES[split] if (root / n).is_dir()), None)


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


def _class_folder_clips(split_dir) -> list[tuple[str, str, object]]:
    """(label, clip name, frame folder) for <split>/<class>/<clip>/; video files raise."""
    clips = []
    for class_dir in sorted(split_dir.iterdir()):
        if not class_dir.is_dir():
            continue
        for clip in sorted(class_dir.iterdir()):
            if clip.is_dir():
                clips.append((class_dir.name, clip.name, clip))
            elif clip.suffix.lower() in video_io.VIDEO_SUFFIXES:
                raise common.not_prepared_error(clip, "kinetics400")
    return clips


def _index_clips(folders, names: set[str]) -> dict:
    """{clip name: frame folder or video file} of the listed `names` found in `folders`, directly
    (flat, as downloaded) or one level down (<class>/<clip>); a frame folder wins over a video."""
    index = {}

    def add(path) -> None:
        if path.is_dir():
            index[path.name] = path
        elif path.suffix.lower() in video_io.VIDEO_SUFFIXES:
            index.setdefault(path.stem, path)

    for folder in folders:
        for path in folder.iterdir():
            if (path.name if path.is_dir() else path.stem) in names:
                add(path)
            elif path.is_dir():  # not a listed clip: a class folder
                for child in path.iterdir():
                    if (child.name if child.is_dir() else child.stem) in names:
                        add(child)
    return index


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
        for split in SPLIT_NAMES:
            folder, table = split_folder(root, split), csv_path(root, split)
            if table is not None:
                clips[split] = self._csv_clips(root, folder, table, split)
                where = f"{table} and {folder or root / 'videos'}"
            elif folder is not None:
                clips[split] = _class_folder_clips(folder)
                where = str(folder)
            else:
                candidates = [str(root / n) + "/" for n in SPLIT_NAMES[split]] + [
                    str(root / d / f"{n}.csv") for d in ("annotations", "") for n in SPLIT_NAMES[split]]
                raise common.manual_data_error(
                    f"Missing Kinetics-400 {split} split: none of {', '.join(candidates)} exists.",
                    _INSTRUCTIONS)
            common.check_not_empty(split, len(clips[split]), where, _INSTRUCTIONS)
            labels.update(label for label, _, _ in clips[split])
        common.set_label_names(self.info, sorted(labels))
        return {split: self._generate_examples(items) for split, items in clips.items()}

    @staticmethod
    def _csv_clips(root, folder, table, split):
        rows = _read_csv(table)
        folders = [f for f in (folder, root / "videos") if f is not None and f.is_dir()]
        index = _index_clips(folders, {_clip_name(row) for row in rows})
        clips, missing = [], []
        for row in rows:
            name = _clip_name(row)
            source = index.get(name)
            if source is None:
                missing.append(name)
            elif not source.is_dir():
                raise common.not_prepared_error(source, "kinetics400")
            else:
                clips.append((row["label"], name, source))
        common.warn_missing(split, missing, len(rows))
        return clips

    def _generate_examples(self, items):
        for label, video_id, source in items:
            yield f"{label}/{video_id}", {"video": common.load_clip(source), "label": label,
                                          "video_id": video_id}
