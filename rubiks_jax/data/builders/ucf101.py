"""UCF101 from manually downloaded files (TFDS name `rubiks_ucf101`, configs split1/2/3).

TFDS's own `ucf101` downloads the videos itself and needs a system ffmpeg to build; this one reads
the frame folders that `python -m rubiks_jax.data.prepare ucf101` makes from the official download.
"""

from __future__ import annotations


import tensorflow_datasets as tfds

from rubiks_jax.data.builders import common

LISTS_DIR = "ucfTrainTestlist"  # the official lists (UCF101TrainTestSplits-RecognitionTask.zip)

_INSTRUCTIONS = f"""
UCF101 (https://www.crcv.ucf.edu/data/UCF101.php) is read from the manual folder
(tfds.download.DownloadConfig(manual_dir=...), default <data_dir>/downloads/manual):

  {LISTS_DIR}/classInd.txt         "1 ApplyEyeMakeup" ...: the classes, numbered from 1
  {LISTS_DIR}/trainlist0<k>.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1" ...
  {LISTS_DIR}/testlist0<k>.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" ... (k = 1, 2, 3)
  {common.FRAMES_DIR}/<class>/<video_name>/img_00001.jpg ...    each video's frames

`python -m rubiks_jax.data.prepare ucf101 --src <download> --dst <manual folder>` writes both from
the download: {LISTS_DIR}/ and the videos UCF-101/<class>/<video_name>.avi (UCF101.rar extracted;
the class folders may also lie in <download> itself). Videos listed without a frame folder are
skipped with one warning per split giving their count.

The config (split1, split2, split3) picks which official split is built; classes are numbered as
in classInd.txt (from 0 here).
{common.PREPARE_INSTRUCTIONS}"""

# Where the download's videos may be: <root>/<class>/<name>.avi.
VIDEO_ROOTS = ("UCF-101", "")


def class_names(lists_dir) -> list[str]:
    """The classes of classInd.txt in its order ("<index from 1> <name>" per line)."""
    path = common.require(lists_dir / "classInd.txt", "UCF101 class list", _INSTRUCTIONS)
    entries = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise common.ManualDataError(f"{path}: unexpected line {line!r}.")
        entries[int(fields[0])] = fields[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise common.ManualDataError(f"{path}: class indices are not 1..{len(entries)} without gaps.")
    return [entries[i] for i in sorted(entries)]


def split_lists(lists_dir, split_number: int) -> dict[str, list[tuple[str, str]]]:
    """{"train": [(class, video file name)], "test": [...]} of official split `split_number`."""
    lists = {}
    for split, prefix in (("train", "trainlist"), ("test", "testlist")):
        path = common.require(lists_dir / f"{prefix}0{split_number}.txt", f"UCF101 {split} list",
                              _INSTRUCTIONS)
        items = []
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            label, sep, file_name = fields[0].replace("\\", "/").partition("/")
            if not sep or "/" in file_name:
                raise common.ManualDataError(f"{path}: unexpected line {line!r} (want <class>/<video>).")
            items.append((label, file_name))
        lists[split] = items
    return lists


class RubiksUcf101(tfds.core.GeneratorBasedBuilder):
    """UCF101: 101 classes, one of the three official train/test splits, clips as JPEG frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = common.split_configs()

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="UCF101 video clips stored as JPEG frames.",
            features=common.deferred_video_features(),
            supervised_keys=("video", "label"),
            homepage="https://www.crcv.ucf.edu/data/UCF101.php",
        )

    def _split_generators(self, dl_manager):
        root = common.resolve_manual_dir(dl_manager, _INSTRUCTIONS)
        lists_dir = common.require(root / LISTS_DIR, "UCF101 list folder", _INSTRUCTIONS)
        names = class_names(lists_dir)
        common.set_label_names(self.info, names)
        lists = split_lists(lists_dir, self.builder_config.split_number)
        known = set(names)
        for split, items in lists.items():
            unknown = sorted({label for label, _ in items} - known)
            if unknown:
                raise common.ManualDataError(
                    f"UCF101 {split} list of split {self.builder_config.split_number} names classes "
                    f"missing from classInd.txt: {', '.join(unknown[:5])}.")
        return {split: self._generate_examples(root, split, items) for split, items in lists.items()}

    def _generate_examples(self, root, split, items):
        return common.class_folder_examples(root, split, items, VIDEO_ROOTS, "ucf101", _INSTRUCTIONS)
