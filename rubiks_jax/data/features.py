"""The feature schema shared by every video builder of this project.

An example is {"video": encoded frames (T,) of an (T, H, W, 3) uint8 clip, "label": int,
"video_id": str}. Frames are stored encoded (JPEG for real data, PNG for the synthetic set) so the
input pipeline can skip decoding (`tfds.decode.SkipDecoding()`) and decode only the frames TSN
sampling picks.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow_datasets as tfds


def video_features(label_names: Sequence[str], encoding_format: str = "jpeg",
                   frame_shape: tuple[int | None, int | None] = (None, None)) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "video": tfds.features.Video(shape=(None, *frame_shape, 3), encoding_format=encoding_format),
        "label": tfds.features.ClassLabel(names=list(label_names)),
        "video_id": tfds.features.Text(),
    })


_MIRRORED_WORDS = (("left", "right"), ("counterclockwise", "clockwise"))


def mirrored_name(name: str) -> str:
    """The class name under a horizontal flip: left <-> right, clockwise <-> counterclockwise."""
    out = name
    for k, (a, b) in enumerate(_MIRRORED_WORDS):  # placeholders first: "counterclockwise" holds
        out = out.replace(a, f"\x00{k}a").replace(b, f"\x00{k}b")  # "clockwise"
    for k, (a, b) in enumerate(_MIRRORED_WORDS):
        out = out.replace(f"\x00{k}a", b).replace(f"\x00{k}b", a)
    return out


def flip_label_pairs(label_names: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of classes that a horizontal flip exchanges: names equal after mirroring (e.g.
    "Pushing something from left to right" / "... from right to left")."""
    index = {name: i for i, name in enumerate(label_names)}
    pairs = []
    for name, i in index.items():
        j = index.get(mirrored_name(name))
        if j is not None and i < j:
            pairs.append((i, j))
    return pairs
