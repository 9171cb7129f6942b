"""The record and the closing table of scripts/gpu_check.sh (standard library only, except
stack-png, which needs matplotlib).

Everything lives in OUT/summary.json, which each stage updates, so separate calls with the same
output folder accumulate:
  {"machine": "...", "stages": {STAGE: {"status", "seconds", "finished", "note"}},
   "bench": {SUITE: the suite's JSON}, "profile": {"title", "launches": [...]}}

  python scripts/gpu_summary.py record OUT STAGE STATUS SECONDS [--note TEXT]
  python scripts/gpu_summary.py set OUT KEY VALUE
  python scripts/gpu_summary.py attach OUT KEY FILE [--name NAME]   # summary[KEY][NAME] = FILE's JSON
  python scripts/gpu_summary.py drop OUT KEY       # forget summary[KEY] (a stage's earlier results)
  python scripts/gpu_summary.py print OUT          # the table, at most 100 lines of 118 characters
  python scripts/gpu_summary.py stack-png OUT_PNG IN_PNG...   # figures stacked into one PNG
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys

STAGES = ["preflight", "build", "test", "sanitize", "bench", "profile"]
MAX_LINES = 100
WIDTH = 118
# Tables grepped from the stage logs: (log, regex of a table's first line). A table ends at the
# first blank line (or a line of the script's own: "===", "$ ").
TABLES = [("profile.log", r"^ncu profile"), ("bench.log", r"benchmark on ")]


def _path(out: str) -> str:
    return os.path.join(out, "summary.json")


def load(out: str) -> dict:
    try:
        with open(_path(out)) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data.setdefault("stages", {})
    return data


def save(out: str, data: dict) -> None:
    os.makedirs(out, exist_ok=True)
    tmp = _path(out) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, _path(out))  # a stage killed mid-write leaves the previous summary intact


def record(out: str, stage: str, status: str, seconds: float, note: str = "") -> None:
    data = load(out)
    now = datetime.datetime.now(datetime.timezone.utc)
    data["stages"][stage] = {"status": status, "seconds": round(seconds, 1),
                             "finished": now.isoformat(timespec="seconds"), "note": note}
    save(out, data)


def attach(out: str, key: str, path: str, name: str | None) -> None:
    data = load(out)
    with open(path) as f:
        value = json.load(f)
    if name is None:
        data[key] = value
    else:
        data.setdefault(key, {})[name] = value
    save(out, data)


def table_blocks(text: str, start: str) -> list[list[str]]:
    """The tables of a log: runs of lines from one matching `start` up to a blank line."""
    blocks, current = [], None
    for line in text.splitlines():
        if current is None:
            if re.search(start, line):
                current = [line]
            continue
        if not line.strip() or line.startswith(("===", "$ ")):
            blocks.append(current)
            current = None
        else:
            current.append(line)
    if current:
        blocks.append(current)
    return blocks


def _stage_line(stage: str, entry: dict | None) -> str:
    if entry is None:
        return f"{stage:10s} not run"
    finished = entry.get("finished", "")[11:19]  # hh:mm:ss of the ISO time
    return (f"{stage:10s} {entry.get('status', '?'):8s} {entry.get('seconds', 0):8.1f}  "
            f"{finished:8s}  {entry.get('note', '')}")


def overall(data: dict) -> str:
    stages = data["stages"]
    failed = [s for s, e in stages.items() if e.get("status") == "FAILED"]
    partial = [s for s, e in stages.items() if e.get("status") == "partial"]
    missing = [s for s in STAGES if s not in stages]
    if failed:
        verdict = f"FAILED ({', '.join(failed)})"
    else:
        verdict = "ok" + (f" (partial: {', '.join(partial)})" if partial else "")
    return f"overall: {verdict}" + (f"; not run: {', '.join(missing)}" if missing else "")


def summary_lines(out: str, max_lines: int = MAX_LINES, width: int = WIDTH) -> list[str]:
    data = load(out)
    head = [f"=== GPU check summary ({_path(out)}; one log per stage beside it)"]
    if data.get("machine"):
        head.append(f"machine: {data['machine']}")
    head.append(f"{'stage':10s} {'status':8s} {'seconds':>8s}  {'finished':8s}  note (UTC)")
    stages = data["stages"]
    head += [_stage_line(s, stages.get(s)) for s in STAGES]
    head += [_stage_line(s, e) for s, e in stages.items() if s not in STAGES]
    tail = [overall(data)]
    body: list[str] = []
    room = max_lines - len(head) - len(tail)
    for log, start in TABLES:
        path = os.path.join(out, log)
        if not os.path.isfile(path):
            continue
        with open(path, errors="replace") as f:
            blocks = table_blocks(f.read(), start)
        lines = [f"--- {log}"] + [line for block in blocks for line in block]
        if len(lines) == 1:
            continue
        if len(body) + len(lines) > room:  # cut this log's tables to what fits, and say so
            keep = max(0, room - len(body) - 1)
            lines = lines[:keep] + [f"... {len(lines) - keep} more lines in {log}"]
        body += lines
    return [line[:width].rstrip() for line in (head + body + tail)[:max_lines]]


def stack_png(out_png: str, inputs: list[str]) -> None:
    """Stacks PNG figures vertically into one file (white padding to the widest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import numpy as np

    images = []
    for path in inputs:
        img = mpimg.imread(path)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        if img.shape[2] == 3:
            img = np.concatenate([img, np.ones(img.shape[:2] + (1,), img.dtype)], axis=-1)
        images.append(img.astype(np.float32))
    width = max(img.shape[1] for img in images)
    padded = [np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=1.0)
              for img in images]
    mpimg.imsave(out_png, np.concatenate(padded, axis=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record")
    p.add_argument("out")
    p.add_argument("stage")
    p.add_argument("status")
    p.add_argument("seconds", type=float)
    p.add_argument("--note", default="")
    p = sub.add_parser("set")
    p.add_argument("out")
    p.add_argument("key")
    p.add_argument("value")
    p = sub.add_parser("attach")
    p.add_argument("out")
    p.add_argument("key")
    p.add_argument("file")
    p.add_argument("--name", default=None)
    p = sub.add_parser("drop")
    p.add_argument("out")
    p.add_argument("key")
    p = sub.add_parser("print")
    p.add_argument("out")
    p = sub.add_parser("stack-png")
    p.add_argument("out_png")
    p.add_argument("inputs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out, args.stage, args.status, args.seconds, args.note)
    elif args.command == "set":
        data = load(args.out)
        data[args.key] = args.value
        save(args.out, data)
    elif args.command == "attach":
        attach(args.out, args.key, args.file, args.name)
    elif args.command == "drop":
        data = load(args.out)
        data.pop(args.key, None)
        save(args.out, data)
    elif args.command == "print":
        print("\n".join(summary_lines(args.out)))
    else:
        stack_png(args.out_png, args.inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
