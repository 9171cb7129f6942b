"""Run feedback: metrics.jsonl and TensorBoard event files in the workdir, and a progress bar.

Not clu's metric writers: they have no JSON-lines writer (metrics.jsonl is what the tests and
docs/RESULTS.md read), nothing that skips the steps a resumed run logs a second time, and their
TensorBoard writer makes the same tf.summary calls as the dozen lines here.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile

from tqdm import tqdm


def _last_logged_steps(path: str) -> dict[str, int]:
    """{split: last step} of an existing metrics.jsonl; drops a line cut short by a crash."""
    last: dict[str, int] = {}
    if not os.path.exists(path):
        return last
    with open(path, "rb+") as f:
        lines = f.read().split(b"\n")
        if lines[-1]:  # no newline at the end: the write was interrupted
            f.truncate(f.tell() - len(lines[-1]))
        for line in lines[:-1]:
            row = json.loads(line)
            last[row["split"]] = max(last.get(row["split"], -1), row["step"])
    return last


def _json_number(value):
    """NaN and Inf become null: JSON has no such numbers (json.dumps would write bare NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def last_row(workdir: str, split: str) -> dict | None:
    """The last metrics.jsonl row of `split` ("train", "eval") in WORKDIR, without step and split;
    None when there is none."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    row = None
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r["split"] == split:
                    row = r
    return row and {k: v for k, v in row.items() if k not in ("step", "split")}


class MetricsLog:
    """Appends {"step", "split", **metrics} lines to WORKDIR/metrics.jsonl and writes the same
    scalars as TensorBoard events (WORKDIR/tensorboard/<split>).

    A resumed run repeats the steps after its checkpoint: rows for a (split, step) at or before the
    last one already in metrics.jsonl are not written again.
    """

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        self._logged = _last_logged_steps(path)
        self._file = open(path, "a", buffering=1)
        self._writers = {}
        self._dir = os.path.join(workdir, "tensorboard")

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled or step <= self._logged.get(split, -1):
            return
        self._logged[split] = step
        row = {"step": step, "split": split, **{k: _json_number(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        import tensorflow as tf  # event files without the tensorboard package

        writer = self._writers.get(split)
        if writer is None:
            writer = self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self._dir, split))
        with writer.as_default():
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    tf.summary.scalar(k, v, step=step)
        writer.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            for w in self._writers.values():
                w.close()


# TensorFlow's C++ start-up notices, printed to stderr while it is imported, before any Python
# logging exists: absl's "before absl::InitializeLog()" line, the oneDNN notice (port.cc) and the
# CPU-feature notice (cpu_feature_guard.cc, and its "To enable the following instructions" line).
_TF_IMPORT_NOTICES = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                                r"|I\d{4} [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\]"
                                r"|To enable the following instructions: ")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up notices dropped; every other line it prints goes
    to stderr as before. For the CLIs, before anything else imports TensorFlow."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(ln for ln in lines if not _TF_IMPORT_NOTICES.match(ln)))
            sys.stderr.flush()


def quiet_logs() -> None:
    """WARNING and above only on the console, unless --verbosity was given: orbax, TFDS and TF log
    every step and every file at INFO. For the CLIs' main functions (flags parsed)."""
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


class Progress:
    """tqdm bar over training steps showing loss, accuracy, learning rates and clips/s."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                         disable=not enabled)
        self._enabled = enabled

    def update(self, step: int, summary: dict) -> None:
        self._bar.n = step
        keys = ("loss", "accuracy", "lr_decay", "lr_shift", "clips_per_s")
        self._bar.set_postfix({k: f"{summary[k]:.4g}" for k in keys if k in summary})

    def message(self, text: str) -> None:
        if self._enabled:
            self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
