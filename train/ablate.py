"""python -m train.ablate --workdir DIR [--seeds 0,1,2] [--variants learned,frozen,tsm,no_temporal]
    [--config train/configs/synthetic.py] [--config.key=value ...]

Does learning the shifts matter? Trains the config's RubiksNet once per variant and seed, with the
same budget, data and seeds, and prints the table (also DIR/ablation.md and DIR/ablation.json):

- learned: the config as it is (shifts learned);
- frozen: the same network with every shift fixed at its initialisation (optim.freeze_shifts);
- tsm: TSM's fixed temporal shift in the same network (1/8 of the channels one frame back, 1/8
  one frame forward, no spatial shift: model.shift_init="tsm", frozen);
- no_temporal: the shifts learned in space only, dt held at 0 (model.learn_temporal_shift=False).

Each run lives in DIR/<variant>/seed<N> and is a normal training workdir; a rerun of the command
skips the runs that finished (their results are kept in DIR/<variant>/seed<N>/ablation_run.json)
and resumes an interrupted one from its checkpoint (its wall time then counts this process only).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from train.metrics_log import import_tensorflow_quietly, quiet_logs

import_tensorflow_quietly()  # before train.construct imports it

from train import construct, trainer, viz  # noqa: E402

VARIANTS = {
    "learned": {},
    "frozen": {"optim.freeze_shifts": True},
    "tsm": {"model.shift_init": "tsm", "optim.freeze_shifts": True},
    "no_temporal": {"model.learn_temporal_shift": False},
}
RUN_FILE = "ablation_run.json"

FLAGS = flags.FLAGS


def variant_config(config, variant: str, seed: int):
    """`config` with the variant's keys and the seed set (a copy)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = config.copy_and_resolve_references()
    c.seed = seed
    for key, value in VARIANTS[variant].items():
        node, leaf = construct.config_leaf(c, key)
        node[leaf] = value
    return c


def run_one(config, variant: str, seed: int, workdir: str) -> dict:
    """Trains one variant and seed in `workdir` (or reads its finished result)."""
    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    start = time.perf_counter()
    result = trainer.train_and_evaluate(variant_config(config, variant, seed), workdir)
    wall = time.perf_counter() - start
    change = viz.movement(workdir).get("all", {})
    row = {"variant": variant, "seed": seed, "top1": result["top1"],
           "num_examples": result["num_examples"], "wall_s": wall,
           "mean_abs_change_dt": change.get("mean_abs_change_dt"),
           "mean_abs_change_dh": change.get("mean_abs_change_dh"),
           "mean_abs_change_dw": change.get("mean_abs_change_dw")}
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(row, f, indent=2)
    return row


def table(rows: list[dict]) -> str:
    """The markdown table: per variant, top-1 per seed, mean and spread (sample standard deviation
    across seeds; max - min beside it), how far dt moved, and the mean wall time of a run."""
    lines = ["| variant | top-1 per seed (%) | mean (%) | std / range (pts) | mean abs(dt - dt0) "
             "| wall per run (min) |", "|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        top1 = [100 * r["top1"] for r in mine]
        std = statistics.stdev(top1) if len(top1) > 1 else 0.0
        moved = [r["mean_abs_change_dt"] for r in mine if r["mean_abs_change_dt"] is not None]
        wall = statistics.mean(r["wall_s"] for r in mine) / 60
        lines.append(f"| {variant} | {', '.join(f'{t:.1f}' for t in top1)} "
                     f"| {statistics.mean(top1):.1f} | {std:.1f} / {max(top1) - min(top1):.1f} "
                     f"| {f'{statistics.mean(moved):.3f}' if moved else '-'} | {wall:.1f} |")
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    quiet_logs()
    seeds = [int(s) for s in FLAGS.seeds]
    for variant in FLAGS.variants:  # an unknown one fails before any training
        variant_config(FLAGS.config, variant, seeds[0])
    rows = []
    for seed in seeds:  # seeds outermost: a stopped ablation has every variant of the early seeds
        for variant in FLAGS.variants:
            workdir = os.path.join(FLAGS.workdir, variant, f"seed{seed}")
            rows.append(run_one(FLAGS.config, variant, seed, workdir))
    header = (f"{FLAGS.config.model.arch} {FLAGS.config.model.tier} on {FLAGS.config.data.name}, "
              f"seeds {', '.join(map(str, seeds))}; {platform.node()}, {os.cpu_count()} CPUs, "
              f"{jax.device_count()} {jax.default_backend()} device(s), "
              f"{time.strftime('%Y-%m-%d')}")
    text = header + "\n\n" + table(rows)
    if jax.process_index() == 0:
        print(text)
        with open(os.path.join(FLAGS.workdir, "ablation.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(FLAGS.workdir, "ablation.json"), "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=2)


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Directory of the ablation's runs and tables.")
    config_flags.DEFINE_config_file("config", "train/configs/synthetic.py", "Training config.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, each run for every variant.")
    flags.DEFINE_list("variants", list(VARIANTS), f"Variants among {', '.join(VARIANTS)}.")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    _define_flags()
    app.run(main)
