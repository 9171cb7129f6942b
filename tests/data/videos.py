"""Real encoded video files for the tests, written by the ffmpeg that rubiks_jax uses (the system's,
else imageio-ffmpeg's), and the official download layouts of the data sets built from them."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
from pathlib import Path

import numpy as np

from rubiks_jax.data import video_io

# (encoder, container suffix, quality options): lossy settings of high quality, so decoded pixels
# stay close to the written ones.
CODECS = {
    "mpeg4_mp4": ("mpeg4", ".mp4", ["-q:v", "2"]),
    "mpeg4_avi": ("mpeg4", ".avi", ["-q:v", "2"]),
    "mjpeg_avi": ("mjpeg", ".avi", ["-q:v", "2"]),
    "h264_mp4": ("libx264", ".mp4", ["-crf", "10", "-preset", "ultrafast"]),
    "h264_mkv": ("libx264", ".mkv", ["-crf", "10", "-preset", "ultrafast"]),
    "vp9_webm": ("libvpx-vp9", ".webm", ["-crf", "10", "-b:v", "0", "-deadline", "realtime",
                                         "-cpu-used", "8"]),
    "vp8_webm": ("libvpx", ".webm", ["-crf", "4", "-b:v", "2M", "-deadline", "realtime"]),
}


@functools.cache
def encoders() -> frozenset[str]:
    out = subprocess.run([video_io.ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                         text=True, check=True).stdout
    return frozenset(line.split()[1] for line in out.splitlines()
                     if len(line.split()) > 1 and line.startswith(" V"))


def pattern(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth (T, H, W, 3) uint8 clip (values 20..229) that changes from frame to frame (codecs
    keep it well)."""
    t = np.arange(num_frames)[:, None, None, None]
    y = np.arange(height)[None, :, None, None]
    x = np.arange(width)[None, None, :, None]
    channel = np.array([0, 45, 90])[None, None, None, :]
    clip = 20 + (7 * seed + 9 * t) % 50 + 40 * x / max(width - 1, 1) + 30 * y / max(height - 1, 1)
    return np.broadcast_to(clip + channel, (num_frames, height, width, 3)).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, codec: str = "mjpeg_avi", fps: int = 10) -> Path:
    """Encodes (T, H, W, 3) uint8 frames as `path` (its suffix replaced by the codec's container)
    through ffmpeg's rawvideo input."""
    encoder, suffix, options = CODECS[codec]
    path = Path(path).with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_frames, height, width, _ = frames.shape
    cmd = [video_io.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
           "-c:v", encoder, *options, str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return path


def close(video: np.ndarray, frames: np.ndarray, mean: float = 4.0, worst: int = 40) -> bool:
    diff = np.abs(video.astype(int) - frames.astype(int))
    return video.shape == frames.shape and diff.mean() < mean and diff.max() <= worst


# ------------------------------------------------------------------------------------------------
# Official layouts (2-3 classes, a few clips of a few frames at 20x28; each function returns
# {clip name: (class, number of frames)})

SIZE = (20, 28)  # (height, width): prepared at --short-side 16 -> 16x22


def make_ssv2(src: Path, codec: str = "vp9_webm") -> dict[str, tuple[str, int]]:
    """labels/{labels,train,validation}.json (the short names of the current download) and
    20bn-something-something-v2/<id>.webm."""
    classes = {"Holding something": "0", "Pushing something from left to right": "1"}
    push = "Pushing [something] from left to right"
    splits = {"train": [("1", "Holding [something]", 3), ("2", push, 4), ("3", "Holding [something]", 5)],
              "validation": [("4", push, 3)]}
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "labels.json").write_text(json.dumps(classes))
    clips = {}
    for split, entries in splits.items():
        (src / "labels" / f"{split}.json").write_text(json.dumps(
            [{"id": i, "template": t, "label": t, "placeholders": []} for i, t, _ in entries]))
        for video_id, template, num_frames in entries:
            write_video(src / "20bn-something-something-v2" / video_id,
                        pattern(num_frames, *SIZE, seed=len(clips)), codec)
            clips[video_id] = (template.replace("[", "").replace("]", ""), num_frames)
    return clips


def make_kinetics(src: Path, flat: bool = True, codec: str = "h264_mp4") -> dict[str, tuple[str, int]]:
    """cvdfoundation's k400/: annotations/{train,val}.csv and train/<clip>.mp4, val/<clip>.mp4
    (flat), or train/<class>/<clip>.mp4 (arrange_by_classes.py) with flat=False; one CSV row
    whose video never downloaded."""
    rows = {"train": [("abseiling", "aaaaaaaaaaa", 0, 10, 3), ("juggling", "bbbbbbbbbbb", 5, 15, 4),
                      ("abseiling", "ccccccccccc", 1, 11, 5), ("juggling", "gonegonegon", 1, 11, None)],
            "val": [("abseiling", "ddddddddddd", 30, 40, 3), ("juggling", "eeeeeeeeeee", 2, 12, 4)]}
    (src / "annotations").mkdir(parents=True)
    clips = {}
    for split, entries in rows.items():
        with (src / "annotations" / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for label, yt, start, end, num_frames in entries:
                writer.writerow([label, yt, start, end, split])
                if num_frames is None:
                    continue
                name = f"{yt}_{start:06d}_{end:06d}"
                folder = src / split if flat else src / split / label
                write_video(folder / name, pattern(num_frames, *SIZE, seed=len(clips)), codec)
                clips[name] = (label, num_frames)
    return clips


HMDB51 = {"brush_hair": {"hair_a": ("1", 3), "hair_b": ("2", 4), "hair_c": ("1", 5)},
          "clap": {"clap_a": ("1", 4), "clap_b": ("2", 3)}}


def make_hmdb51(src: Path, codec: str = "mpeg4_avi") -> dict[str, tuple[str, int]]:
    """testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt and <class>/<name>.avi (the
    per-class .rar files extracted); split 1 as HMDB51 above, splits 2 and 3 everything train."""
    splits_dir = src / "testTrainMulti_7030_splits"
    splits_dir.mkdir(parents=True)
    clips = {}
    for label, videos in HMDB51.items():
        for k in (1, 2, 3):
            lines = [f"{name}.avi {code if k == 1 else '1'} " for name, (code, _) in videos.items()]
            (splits_dir / f"{label}_test_split{k}.txt").write_text("\n".join(lines) + "\n")
        for name, (_, num_frames) in videos.items():
            write_video(src / label / name, pattern(num_frames, *SIZE, seed=len(clips)), codec)
            clips[name] = (label, num_frames)
    return clips


UCF101 = {"ApplyEyeMakeup": {"v_ApplyEyeMakeup_g08_c01": 3, "v_ApplyEyeMakeup_g01_c01": 4},
          "Archery": {"v_Archery_g08_c01": 5, "v_Archery_g01_c01": 3},
          "YoYo": {"v_YoYo_g08_c01": 4, "v_YoYo_g01_c01": 3}}


def make_ucf101(src: Path, codec: str = "mpeg4_avi") -> dict[str, tuple[str, int]]:
    """ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt and UCF-101/<class>/<name>.avi;
    groups g08+ train, g01-g07 test (as the official split 1)."""
    lists_dir = src / "ucfTrainTestlist"
    lists_dir.mkdir(parents=True)
    (lists_dir / "classInd.txt").write_text(
        "".join(f"{i} {label}\r\n" for i, label in enumerate(UCF101, start=1)))  # CRLF as shipped
    clips, train, test = {}, [], []
    for i, (label, videos) in enumerate(UCF101.items(), start=1):
        for name, num_frames in videos.items():
            write_video(src / "UCF-101" / label / name, pattern(num_frames, *SIZE, seed=len(clips)),
                        codec)
            clips[name] = (label, num_frames)
            (train if "_g08_" in name else test).append((label, name, i))
    for k in (1, 2, 3):
        (lists_dir / f"trainlist0{k}.txt").write_text(
            "".join(f"{label}/{name}.avi {i}\r\n" for label, name, i in train))
        (lists_dir / f"testlist0{k}.txt").write_text(
            "".join(f"{label}/{name}.avi\r\n" for label, name, _ in test))
    return clips
