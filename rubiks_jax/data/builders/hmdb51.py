"""HMDB51 from manually downloaded files (TFDS name `rubiks_hmdb51`, configs split1/2/3)."""

from __future__ import annotations


import tensorflow_datasets as tfds

from rubiks_jax.data.builders import common

SPLITS_DIR = "testTrainMulti_7030_splits"  # the official split files (test_train_splits.rar)

_INSTRUCTIONS = f"""
HMDB51 (https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/) is read from
the manual folder (tfds.download.DownloadConfig(manual_dir=...), default
<data_dir>/downloads/manual):

  {SPLITS_DIR}/<class>_test_split<k>.txt    the official split files (test_train_splits.rar),
      k = 1, 2, 3; one line per video: "<video_name>.avi <0|1|2>" (1 = train, 2 = test, 0 = unused)
  {common.FRAMES_DIR}/<class>/<video_name>/img_00001.jpg ...    each video's frames

`python -m rubiks_jax.data.prepare hmdb51 --src <download> --dst <manual folder>` writes both from
the download: {SPLITS_DIR}/ and the videos <class>/<video_name>.avi (hmdb51_org.rar and its
per-class .rar files extracted into <download>, or into <download>/videos). Videos listed in a
split file without a frame folder are skipped with one warning per split giving their count.

The config (split1, split2, split3) picks which official split is built. The class names are taken
from the split file names and sorted alphabetically (51 classes).
{common.PREPARE_INSTRUCTIONS}"""

# Where the download's videos may be: <root>/<class>/<name>.avi.
VIDEO_ROOTS = ("videos", "hmdb51_org", "")


def split_files(splits_dir, split_number: int) -> dict:
    """{class: its split file} of official split `split_number` (<class>_test_split<k>.txt)."""
    suffix = f"_test_split{split_number}.txt"
    files = {p.name[: -len(suffix)]: p for p in splits_dir.iterdir() if p.name.endswith(suffix)}
    if not files:
        raise common.manual_data_error(f"No split files *{suffix} in {splits_dir}.", _INSTRUCTIONS)
    return files


def split_lists(files: dict) -> dict[str, list[tuple[str, str]]]:
    """{"train": [(class, video file name)], "test": [...]} from `split_files`' files."""
    lists = {"train": [], "test": []}
    for label in sorted(files):
        for line in files[label].read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise common.ManualDataError(f"{files[label]}: unexpected line {line!r}.")
            if fields[1] != "0":
                lists["train" if fields[1] == "1" else "test"].append((label, fields[0]))
    return lists


class RubiksHmdb51(tfds.core.GeneratorBasedBuilder):
    """HMDB51: 51 classes, one of the three official train/test splits, clips as JPEG frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = common.split_configs()

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="HMDB51 video clips stored as JPEG frames.",
            features=common.deferred_video_features(),
            supervised_keys=("video", "label"),
            homepage="https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/",
        )

    def _split_generators(self, dl_manager):
        root = common.resolve_manual_dir(dl_manager, _INSTRUCTIONS)
        splits_dir = common.require(root / SPLITS_DIR, "HMDB51 split folder", _INSTRUCTIONS)
        files = split_files(splits_dir, self.builder_config.split_number)
        common.set_label_names(self.info, sorted(files))
        lists = split_lists(files)
        return {split: self._generate_examples(root, split, items) for split, items in lists.items()}

    def _generate_examples(self, root, split, items):
        return common.class_folder_examples(root, split, items, VIDEO_ROOTS, "hmdb51", _INSTRUCTIONS)
