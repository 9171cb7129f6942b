"""python -m train.viz --workdir DIR --out DIR [--step best|latest|N]

Draws what a trained run's shifts learned (rubiks_jax.viz): OUT/shifts_3d.png (each layer's
channels at their (dt, dh, dw), the RubiksNet paper's Figure 6), OUT/histograms.png (|dt|, |dh|,
|dw| per stage), OUT/temporal_fraction.png (channels with |dt| > 0.5 per stage, mean |shift| per
layer), OUT/budget.png for RubiksNet-AQ (shifted fraction per layer against config.model.budget)
and OUT/summary.json with the numbers. The run's initialisation (its config.seed; what training
started from unless config.init_from was set) is drawn beside the learned values. Prints the paths.
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags

from rubiks_jax import viz as viz_lib
from train import construct, inference

FLAGS = flags.FLAGS


def _writable_dir(out: str) -> str:
    """`out`, created if missing; a clear error if it cannot be written."""
    try:
        os.makedirs(out, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise NotADirectoryError(f"--out {out!r} exists and is not a directory") from err
    except PermissionError as err:
        raise PermissionError(f"--out {out!r}: cannot create the directory ({err})") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out!r} is not writable")
    return out


def visualize(workdir: str, out: str, which: str = "best") -> list[str]:
    """Writes the figures and summary.json of checkpoint `which` of a training workdir into `out`;
    returns their paths."""
    _writable_dir(out)
    run, state, step = inference.restore(workdir, which)
    c = run.config
    aq = c.model.get("variant") == "rubiks3d_aq"
    title = f"{c.model.get('arch', '')} {c.model.get('tier', '')} {c.model.get('variant', '')}, " \
            f"step {step}"
    extra = {"workdir": workdir, "step": step, "arch": c.model.get("arch"),
             "tier": c.model.get("tier"), "variant": c.model.get("variant"),
             "shift_init": c.model.get("shift_init"), "seed": c.seed,
             "reference_is": "the initialisation from config.seed" + (
                 f" (the run started from {c.init_from})" if c.get("init_from") else "")}
    return viz_lib.write_all(jax.device_get(state.variables()), out,
                             reference=_initial_variables(run),
                             budget=float(c.model.budget) if aq else None, title=title.strip(),
                             extra=extra)


def _initial_variables(run: construct.Components) -> dict:
    """The variables the run's training started from: its config.seed's initialisation."""
    initial = construct.assemble(run.config, run.class_names, steps_per_epoch=1).state
    return jax.device_get(initial.variables())


def movement(workdir: str, which: str = "latest") -> dict[str, dict]:
    """How far checkpoint `which` of a run's shifts moved from the initialisation, per stage and
    "all" (rubiks_jax.viz.change_stats); {} for a model without shift layers."""
    run, state, _ = inference.restore(workdir, which)
    layers = viz_lib.collect_shifts(jax.device_get(state.variables()))
    if not layers:
        return {}
    return viz_lib.change_stats(layers, viz_lib.collect_shifts(_initial_variables(run)))


def describe_movement(change: dict[str, dict]) -> str:
    """One line of `movement`: the mean |d - d0| per axis over all layers, and dt's per stage."""
    if not change:
        return "the model has no shift layers"
    everything = change["all"]
    axes = ", ".join(f"{axis} {everything[f'mean_abs_change_{axis}']:.3f}"
                     for axis in viz_lib.AXIS_NAMES
                     if everything.get(f"mean_abs_change_{axis}") is not None)
    stages = ", ".join(f"{name} {stats['mean_abs_change_dt']:.3f}"
                       for name, stats in change.items()
                       if name != "all" and stats.get("mean_abs_change_dt") is not None)
    return (f"the shifts moved from their initialisation by mean |d - d0| = {axes} (frames, "
            f"pixels); dt per stage: {stages or '-'}")


def main(argv):
    del argv
    try:
        paths = visualize(FLAGS.workdir, FLAGS.out, FLAGS.step)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as err:
        raise SystemExit(f"train.viz: {err}") from None
    print(json.dumps(paths, indent=2))


def _define_flags() -> None:
    # Defined for the CLI only: importing this module (tests, other tools) must not claim flag
    # names such as --workdir that other train CLIs define too.
    flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
    flags.DEFINE_string("out", None, "Output directory for the PNGs and summary.json.")
    flags.DEFINE_string("step", "best",
                        "Checkpoint: 'best' (by validation top-1), 'latest' or a step.")
    flags.mark_flags_as_required(["workdir", "out"])


if __name__ == "__main__":
    _define_flags()
    app.run(main)
