"""Turns a video data set as downloaded into the frame folders that our builders read:

    python -m rubiks_jax.data.prepare DATASET --src RAW --dst PREPARED [--workers N]
        [--short-side 256] [--fps F] [--jpeg-quality 2]

DATASET is ssv2, kinetics400, hmdb51 or ucf101; RAW is its download in the official layout (each
builder's MANUAL_DOWNLOAD_INSTRUCTIONS); PREPARED becomes the builder's manual_dir
(--config.data.manual_dir): the annotation files copied, and for each video a folder of JPEG frames
img_00001.jpg, ... shrunk to a short side of --short-side (0 = native; smaller videos keep their
size), at --fps frames per second if given (default: every frame). The common practice (TSM,
mmaction2) of extracting once, in parallel, by a separate tool: the builders never decode videos.
The videos prepared are those the builder reads: SSv2's train and validation ids, every video in
Kinetics-400's train and validation folders (not test), every video in HMDB51's or UCF101's three
splits. RAW and PREPARED are local folders.

N workers (default: the CPU count) each run one ffmpeg (`video_io.extract_frames`) at a time. A clip
is extracted into PREPARED/.prepare_tmp/ and renamed into place when complete, so its frame folder
appearing is its done marker: a rerun skips finished clips and redoes interrupted ones. Clips
ffmpeg cannot decode are listed with ffmpeg's message in PREPARED/prepare_report.json (with the
counts, and the listed videos not found in RAW); a rerun retries them, and the builders skip them
with a warning. The exit status is 1 when a clip failed. PREPARED/prepare.json records the options;
a rerun with other options is refused (the folder would mix frame sizes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import tqdm

from rubiks_jax.data import video_io
from rubiks_jax.data.builders import common, hmdb51, kinetics400, ssv2, ucf101

TMP_DIR = ".prepare_tmp"
OPTIONS_FILE = "prepare.json"
REPORT_FILE = "prepare_report.json"


class SourceLayoutError(FileNotFoundError):
    """The download folder is not laid out as the data set's official download."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One video to extract: its file and its frame folder, relative to the destination."""
    video: Path
    frames: str


@dataclasses.dataclass
class Plan:
    """What preparing a download means: clips to extract, annotation files to copy (source,
    destination relative to the destination folder), listed videos missing from the download."""
    clips: list[Clip]
    copies: list[tuple[Path, str]]
    missing: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
    """The outcome of one run: clips extracted now, clips already done, failures (video, ffmpeg's
    message), listed videos not found."""
    prepared: int = 0
    already_prepared: int = 0
    failed: list[dict] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# The official layouts


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _first_file(dirs: Sequence[Path], names: Sequence[str]) -> Path | None:
    return next((d / n for d in dirs for n in names if (d / n).is_file()), None)


def _require_dir(root: Path, names: Sequence[str], what: str) -> Path:
    found = _first_dir(root, names)
    if found is None:
        raise SourceLayoutError(f"Missing {what}: none of "
                                f"{', '.join(str(root / n) + '/' for n in names)} exists.")
    return found


def _videos_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir()
            if p.suffix.lower() in video_io.VIDEO_SUFFIXES and p.is_file()}


def _class_videos(src: Path, roots: Sequence[str], items: Sequence[tuple[str, str]]) -> Plan:
    """Clips frames/<class>/<name>/ of the listed (class, video file name) items, each video found
    in the first of src/<root>/<class>/ that holds it (HMDB51, UCF101)."""
    plan = Plan([], [])
    for label, file_name in sorted(set(items)):
        video = next((src / r / label / file_name for r in roots
                      if (src / r / label / file_name).is_file()), None)
        if video is None:
            plan.missing.append(f"{label}/{file_name}")
        else:
            plan.clips.append(Clip(video, f"{common.FRAMES_DIR}/{label}/{video.stem}"))
    return plan


def _copy_folder(src_dir: Path, dst_name: str) -> list[tuple[Path, str]]:
    return [(p, f"{dst_name}/{p.name}") for p in sorted(src_dir.iterdir()) if p.is_file()]


def plan_ssv2(src: Path) -> Plan:
    """<src>[/labels]/{something-something-v2-,}{labels,train,validation}.json and
    <src>/20bn-something-something-v2/<id>.webm -> frames/<id>/ for the train and validation ids."""
    label_dirs = [src, src / "labels"]
    copies, ids = [], []
    for key, names in ssv2.ANNOTATIONS.items():
        path = _first_file(label_dirs, names)
        if path is None:
            raise SourceLayoutError(f"Missing the Something-Something-V2 {key} file: none of "
                                    f"{', '.join(str(d / n) for d in label_dirs for n in names)}.")
        copies.append((path, path.name))
        if key != "labels":
            with path.open() as f:
                ids += [str(entry["id"]) for entry in json.load(f)]
    videos = _videos_by_stem(_require_dir(src, [ssv2.VIDEOS_DIR], "Something-Something-V2 videos"))
    plan = Plan([], copies)
    for video_id in sorted(set(ids), key=lambda i: (len(i), i)):
        if video_id in videos:
            plan.clips.append(Clip(videos[video_id], f"{common.FRAMES_DIR}/{video_id}"))
        else:
            plan.missing.append(video_id)
    return plan


def plan_hmdb51(src: Path) -> Plan:
    """<src>/testTrainMulti_7030_splits/*.txt and <src>[/videos]/<class>/<name>.avi ->
    frames/<class>/<name>/ for the videos of any of the three splits."""
    splits_dir = _require_dir(src, [hmdb51.SPLITS_DIR], "HMDB51 split folder")
    items = []
    for k in (1, 2, 3):
        for split_items in hmdb51.split_lists(hmdb51.split_files(splits_dir, k)).values():
            items += split_items
    plan = _class_videos(src, hmdb51.VIDEO_ROOTS, items)
    plan.copies = _copy_folder(splits_dir, hmdb51.SPLITS_DIR)
    return plan


def plan_ucf101(src: Path) -> Plan:
    """<src>/ucfTrainTestlist/*.txt and <src>[/UCF-101]/<class>/<name>.avi ->
    frames/<class>/<name>/ for the videos of any of the three splits."""
    lists_dir = _require_dir(src, [ucf101.LISTS_DIR], "UCF101 list folder")
    ucf101.class_names(lists_dir)  # checks classInd.txt
    items = []
    for k in (1, 2, 3):
        for split_items in ucf101.split_lists(lists_dir, k).values():
            items += split_items
    plan = _class_videos(src, ucf101.VIDEO_ROOTS, items)
    plan.copies = _copy_folder(lists_dir, ucf101.LISTS_DIR)
    return plan


def plan_kinetics400(src: Path) -> Plan:
    """The train and validation videos of <src> in either layout (<split>/<clip>.mp4 flat with
    annotations/<split>.csv, or <split>/<class>/<clip>.mp4), and the older videos/<clip>.mp4, ->
    the same paths with a frame folder in place of each video; the CSV files copied. Videos in
    replacement/ (the fixed versions of corrupted training videos) replace those of their YouTube
    id."""
    copies = []
    for split in kinetics400.SPLIT_NAMES:
        path = kinetics400.csv_path(src, split)
        if path is not None:
            copies.append((path, path.relative_to(src).as_posix()))
    folders = [kinetics400.split_folder(src, split) for split in kinetics400.SPLIT_NAMES]
    folders = [f for f in folders if f is not None]
    if (src / "videos").is_dir():
        folders.append(src / "videos")
    if not folders:
        names = [n for names in kinetics400.SPLIT_NAMES.values() for n in names] + ["videos"]
        raise SourceLayoutError(f"No Kinetics-400 videos: none of "
                                f"{', '.join(str(src / n) + '/' for n in names)} exists.")
    replacements = {}
    if (src / "replacement").is_dir():
        replacements = {p.stem[:11]: p for p in (src / "replacement").rglob("*")
                        if p.suffix.lower() in video_io.VIDEO_SUFFIXES}
    plan = Plan([], copies)
    for folder in folders:
        for path in sorted(folder.iterdir()):
            videos = sorted(_videos_by_stem(path).values()) if path.is_dir() else [path]
            for video in videos:
                if video.suffix.lower() in video_io.VIDEO_SUFFIXES:
                    frames = video.parent.relative_to(src).as_posix() + "/" + video.stem
                    plan.clips.append(Clip(replacements.get(video.stem[:11], video), frames))
    return plan


PLANNERS: dict[str, Callable[[Path], Plan]] = {
    "ssv2": plan_ssv2, "kinetics400": plan_kinetics400, "hmdb51": plan_hmdb51, "ucf101": plan_ucf101}


# ------------------------------------------------------------------------------------------------
# Extraction


def _check_options(dst: Path, options: dict) -> None:
    path = dst / OPTIONS_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != options:
            raise ValueError(f"{dst} was prepared with {previous}, not {options}: rerun with those "
                             "options or use another --dst (one folder holds one frame size).")
    else:
        path.write_text(json.dumps(options, indent=2) + "\n")


def tmp_folder(dst: Path, frames: str) -> Path:
    """Where the clip of frame folder `frames` is extracted before it is renamed into place. Named
    by a hash: ffmpeg reads "%" in its output path as a pattern (HMDB51 names hold odd characters)."""
    return dst / TMP_DIR / hashlib.sha1(frames.encode()).hexdigest()[:20]


def _extract(clip: Clip, dst: Path, options: dict, threads: int) -> str | None:
    """Extracts one clip (into its temporary folder, then renamed into place); ffmpeg's message
    when it fails, else None."""
    final = dst / clip.frames
    tmp = tmp_folder(dst, clip.frames)
    shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted run left
    tmp.mkdir(parents=True)
    try:
        video_io.extract_frames(clip.video, tmp, short_side=options["short_side"], fps=options["fps"],
                                jpeg_quality=options["jpeg_quality"], threads=threads)
    except video_io.VideoDecodeError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        return str(err)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)  # atomic: a frame folder exists only once complete
    return None


def prepare(dataset: str, src: str | os.PathLike, dst: str | os.PathLike, workers: int = 0,
            short_side: int = 256, fps: float | None = None, jpeg_quality: int = 2,
            progress: bool = True) -> Report:
    """Prepares `dataset` from the download `src` into `dst` (module docstring); returns and writes
    (dst/prepare_report.json) the report. workers 0 = the CPU count."""
    if dataset not in PLANNERS:
        raise ValueError(f"Unknown data set {dataset!r}; one of {', '.join(PLANNERS)}.")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise SourceLayoutError(f"Download folder {src} does not exist.")
    plan = PLANNERS[dataset](src)
    video_io.ffmpeg_exe()  # no ffmpeg: fail now, not once per clip
    dst.mkdir(parents=True, exist_ok=True)
    options = {"dataset": dataset, "short_side": int(short_side), "fps": fps or None,
               "jpeg_quality": int(jpeg_quality)}
    _check_options(dst, options)
    for source, relative in plan.copies:
        (dst / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dst / relative)

    report = Report(missing=plan.missing)
    todo = [clip for clip in plan.clips if not (dst / clip.frames).is_dir()]
    report.already_prepared = len(plan.clips) - len(todo)
    workers = workers or os.cpu_count() or 1
    # Threads suffice: each waits on its ffmpeg process. ffmpeg's own threads share the cores.
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        futures = {pool.submit(_extract, clip, dst, options, threads): clip for clip in todo}
        with tqdm.tqdm(total=len(todo), desc=f"prepare {dataset}", unit="clip", mininterval=1.0,
                       disable=not progress) as bar:
            for future in concurrent.futures.as_completed(futures):
                error = future.result()
                if error is None:
                    report.prepared += 1
                else:
                    report.failed.append({"video": str(futures[future].video), "error": error})
                bar.update()
    finally:  # on an error or Ctrl-C, the queued clips are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)
    report.failed.sort(key=lambda f: f["video"])
    try:
        (dst / TMP_DIR).rmdir()
    except OSError:  # absent, or left by another run on the same folder
        pass
    (dst / REPORT_FILE).write_text(json.dumps(
        {**options, "src": str(src), **dataclasses.asdict(report)}, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rubiks_jax.data.prepare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PLANNERS))
    parser.add_argument("--src", required=True, help="the download, in the official layout")
    parser.add_argument("--dst", required=True, help="the prepared folder (the builder's manual_dir)")
    parser.add_argument("--workers", type=int, default=0, help="parallel ffmpeg runs (0: CPU count)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="shrink frames to this short side (0: native size)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: every frame)")
    parser.add_argument("--jpeg-quality", type=int, default=2, help="ffmpeg -q:v, 2 (best) to 31")
    args = parser.parse_args(argv)
    try:
        report = prepare(args.dataset, args.src, args.dst, workers=args.workers,
                         short_side=args.short_side, fps=args.fps, jpeg_quality=args.jpeg_quality,
                         progress=True)
    except (OSError, ValueError, video_io.FfmpegNotFoundError) as err:
        print(f"prepare: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {report.prepared} clips prepared, {report.already_prepared} already "
          f"prepared, {len(report.failed)} failed, {len(report.missing)} listed videos missing "
          f"(report: {Path(args.dst) / REPORT_FILE})")
    for failure in report.failed[:10]:
        print(f"  failed: {failure['error']}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
