"""Something-Something-V2 from manually downloaded files (TFDS name `rubiks_ssv2`)."""

from __future__ import annotations

import json

import tensorflow_datasets as tfds

from rubiks_jax.data.builders import common

VIDEOS_DIR = "20bn-something-something-v2"  # the download's videos: <id>.webm

_INSTRUCTIONS = f"""
Something-Something-V2 (https://developer.qualcomm.com/software/ai-datasets/something-something)
cannot be downloaded automatically. The manual folder (tfds.download.DownloadConfig(manual_dir=...),
default <data_dir>/downloads/manual) holds

  something-something-v2-labels.json      {{"Holding something": "0", ...}}: class -> index
  something-something-v2-train.json       [{{"id": "78687", "template": "Holding [something] ...",
  something-something-v2-validation.json    "label": ..., "placeholders": [...]}}, ...]
  (the short names labels.json, train.json, validation.json are accepted as well)
  {common.FRAMES_DIR}/<id>/img_00001.jpg ...      each clip's frames

`python -m rubiks_jax.data.prepare ssv2 --src <download> --dst <manual folder>` writes all of it
from the download: the label files (in <download> or <download>/labels) and the videos
<download>/{VIDEOS_DIR}/<id>.webm.
Clips listed in a split file without a frame folder are skipped with one warning per split giving
their count.

The class of a clip is its "template" with the brackets removed ("Holding [something] next to
[something]" -> "Holding something next to something"); classes are numbered as in the labels file.
{common.PREPARE_INSTRUCTIONS}"""

# The annotation files the builder reads, each by its long or short name.
ANNOTATIONS = {
    "labels": ("something-something-v2-labels.json", "labels.json"),
    "train": ("something-something-v2-train.json", "train.json"),
    "validation": ("something-something-v2-validation.json", "validation.json"),
}


def template_to_class(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def _read_json(path):
    with path.open("r") as f:
        return json.load(f)


class RubiksSsv2(tfds.core.GeneratorBasedBuilder):
    """Something-Something-V2: 174 classes, clips stored as encoded JPEG frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Something-Something-V2 video clips stored as JPEG frames.",
            features=common.deferred_video_features(),
            supervised_keys=("video", "label"),
            homepage="https://developer.qualcomm.com/software/ai-datasets/something-something",
        )

    def _split_generators(self, dl_manager):
        root = common.resolve_manual_dir(dl_manager, _INSTRUCTIONS)
        paths = {key: common.first_existing(root, names, f"Something-Something-V2 {key} file", _INSTRUCTIONS)
                 for key, names in ANNOTATIONS.items()}
        index = _read_json(paths["labels"])
        names = sorted(index, key=lambda name: int(index[name]))
        if sorted(int(v) for v in index.values()) != list(range(len(names))):
            raise common.ManualDataError(
                f"{paths['labels']}: class indices are not 0..{len(names) - 1} without gaps.")
        common.set_label_names(self.info, names)
        return {split: self._generate_examples(root, paths[split], split) for split in ("train", "validation")}

    def _generate_examples(self, root, split_file, split):
        entries = _read_json(split_file)
        known = set(self.info.features["label"].names)
        found, missing = [], []
        for entry in entries:
            video_id = str(entry["id"])
            label = template_to_class(entry["template"])
            if label not in known:
                raise common.ManualDataError(
                    f"{split_file}: clip {video_id} has template {entry['template']!r}, whose class "
                    f"{label!r} is not in the labels file.")
            source = common.frames_or_video(root / common.FRAMES_DIR / video_id,
                                            [root / VIDEOS_DIR / f"{video_id}.webm"], "ssv2")
            if source is None:
                missing.append(video_id)
            else:
                found.append((video_id, label, source))
        common.warn_missing(split, missing, len(entries))
        common.check_not_empty(split, len(found), str(root / common.FRAMES_DIR), _INSTRUCTIONS)
        for video_id, label, source in found:
            yield video_id, {"video": common.load_clip(source), "label": label, "video_id": video_id}
