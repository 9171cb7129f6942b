"""The record and the closing table of tools/gpu_check.py (standard library only, except
stack_png, which needs matplotlib).

Everything lives in OUT/summary.json, which each stage updates, so separate calls with the same
output folder accumulate:
  {"machine": "...", "stages": {STAGE: {"status", "seconds", "finished", "note"}},
   "bench": {SUITE: the suite's JSON}, "profile": {"title", "launches": [...]}}
summary_lines(OUT) is the closing table: at most 100 lines of 118 characters.
"""

from __future__ import annotations

import datetime
import json
import os
import re

STAGES = ["preflight", "build", "test", "sanitize", "profile", "bench"]
MAX_LINES = 100
WIDTH = 118
# Tables grepped from the stage logs: (log, regex of a table's first line). A table ends at the
# first blank line (or a line of the script's own: "===", "$ ").
TABLES = [("profile.log", r"^ncu profile"), ("bench.log", r"^op A/B"),
          ("bench.log", r"benchmark on ")]


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


def ab_table(v3: dict, v4: dict) -> list[str]:
    """The op suite's impl="ffi" rows with the v3 and the v4 kernels side by side (two runs of the
    suite, RUBIKS_JAX_CUDA_KERNELS=v3 and v4), with the v3 run's pure-XLA rows and floor."""
    def rows(result, impl):
        return {(tuple(r["shape"]), r["dtype"], r["mode"]): r for r in result["rows"]
                if r["impl"] == impl}

    a, b, xla = rows(v3, "ffi"), rows(v4, "ffi"), rows(v3, "xla")
    lines = ["op A/B: per-call device time (us), ffi with the v3 and v4 kernels; xla and the floor "
             "from the v3 run",
             f"{'(N,T,H,W,C)':20s} {'dtype':9s} {'mode':8s} {'v3':>9s} {'v4':>9s} {'v4/v3':>6s} "
             f"{'xla':>9s} {'floor':>8s} {'v4 x floor':>10s} {'v4 vs xla':>9s}"]
    for key, r3 in a.items():
        r4, rx = b.get(key), xla.get(key)
        t3 = r3["median_s"] * 1e6
        t4 = r4["median_s"] * 1e6 if r4 else None
        tx = rx["median_s"] * 1e6 if rx else None
        floor = r3["floor_s"] * 1e6

        def num(v, spec):
            return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])

        lines.append(
            f"{str(key[0]):20s} {key[1]:9s} {key[2]:8s} {t3:9.1f} {num(t4, '9.1f')} "
            f"{num(t4 / t3 if t4 else None, '6.2f')} {num(tx, '9.1f')} {floor:8.1f} "
            f"{num(t4 / floor if t4 else None, '10.2f')} {num(tx / t4 if tx and t4 else None, '9.2f')}")
    return lines
