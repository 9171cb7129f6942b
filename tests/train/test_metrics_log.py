"""metrics.jsonl: a resumed run does not log a step twice; a line cut short by a crash is
dropped."""

import json
import os

from train.metrics_log import MetricsLog, last_row


def test_steps_logged_before_a_resume_are_not_written_again(tmp_path):
    path = os.path.join(tmp_path, "metrics.jsonl")
    log = MetricsLog(str(tmp_path))
    log.write(2, "train", {"loss": 2.0})
    log.write(4, "train", {"loss": 1.0})
    log.write(4, "eval", {"top1": 0.5})
    log.close()
    with open(path, "a") as f:  # the process was killed while writing step 6
        f.write('{"step": 6, "spl')
    log = MetricsLog(str(tmp_path))  # resumed from the checkpoint at 2: steps 3 and 4 run again
    log.write(4, "train", {"loss": 9.0})
    log.write(4, "eval", {"top1": 0.0})
    log.write(6, "train", {"loss": 0.5})
    log.write(8, "eval", {"top1": 0.75})
    log.close()
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    assert [(r["step"], r["split"]) for r in rows] == [
        (2, "train"), (4, "train"), (4, "eval"), (6, "train"), (8, "eval")]
    assert rows[1]["loss"] == 1.0 and rows[3]["loss"] == 0.5
    assert os.listdir(os.path.join(tmp_path, "tensorboard", "eval"))


def test_non_finite_values_are_written_as_null_and_the_last_row_is_found(tmp_path):
    log = MetricsLog(str(tmp_path))
    log.write(2, "train", {"loss": float("nan"), "accuracy": 0.5})
    log.write(2, "eval", {"top1": 0.25})
    log.write(4, "train", {"loss": float("inf"), "accuracy": 0.75})
    log.close()
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        rows = [json.loads(line, parse_constant=lambda c: 1 / 0) for line in f]  # strict JSON
    assert rows[0]["loss"] is None and rows[2]["loss"] is None
    assert last_row(str(tmp_path), "train") == {"loss": None, "accuracy": 0.75}
    assert last_row(str(tmp_path), "eval") == {"top1": 0.25}
    assert last_row(str(tmp_path / "nothing"), "eval") is None
