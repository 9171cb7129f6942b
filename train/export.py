"""python -m train.export --workdir DIR [--step best|latest|N] [--out DIR/export] [--impl xla|ffi]

Writes a trained run's inference function, video (B, T, S, S, 3) ImageNet-normalised float32 ->
logits (B, classes), in two forms that run without the training code:
- OUT/model.jax_exported: `jax.export` serialized, batch size B symbolic. Load it with
  `jax.export.deserialize(open(path, "rb").read())` and call `.call(video)`.
- OUT/saved_model/: a TensorFlow SavedModel (`jax2tf`, batch size symbolic) for serving: signature
  `serving_default`, input "video", output "logits".
- OUT/export.json: input shape, class names, step, variant and which implementation ran the shift.
RubiksNet-Q and -AQ are exported in their inference form (integer shifts, rubiks_jax.models.deploy).
The default `--impl xla` lowers the shift to plain StableHLO: both artifacts are portable (any
platform jax or TensorFlow runs on, no rubiks-jax needed). `--impl ffi` keeps our kernels as custom
calls in the jax artifact (faster; loading it needs rubiks-jax with its kernels imported first,
on a platform they were built for) and writes no SavedModel (TensorFlow cannot run them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import app, flags

from rubiks_jax.models import deploy
from rubiks_jax.ops import ffi_kernels
from rubiks_jax.models.rubiksnet import RubiksNet
from train import inference
from train.metrics_log import quiet_logs

FLAGS = flags.FLAGS

JAX_FILE = "model.jax_exported"
SAVED_MODEL_DIR = "saved_model"
INFO_FILE = "export.json"


def inference_fn(workdir: str, which: str = "best", impl: str = "xla"
                 ) -> tuple[Callable[[jax.Array], jax.Array], dict]:
    """(video -> logits with the checkpoint's variables closed over, a description) for `which`
    checkpoint of a training workdir; RubiksNet-Q/AQ in their inference form."""
    run, state, step = inference.restore(workdir, which)
    model, variables = run.model, state.variables()
    if isinstance(model, RubiksNet):
        model, variables = deploy.to_inference(model.clone(impl=impl), variables)
    elif impl == "ffi":
        raise ValueError(f"--impl ffi: {type(model).__name__} has no RubiksShift to run with it")

    def fn(video: jax.Array) -> jax.Array:
        return model.apply(variables, video, train=False)

    info = {"input_shape": ["B", run.data.num_frames, run.data.crop_size, run.data.crop_size, 3],
            "input": "ImageNet-normalised float32 frames", "output": "logits (B, classes)",
            "class_names": run.class_names, "step": step, "impl": impl,
            "model": type(model).__name__, "variant": getattr(model, "variant", None)}
    return fn, info


def export(workdir: str, out: str | None = None, which: str = "best", impl: str = "xla") -> dict:
    """Writes the artifacts (see the module docstring) into `out`; returns their description."""
    out = out or os.path.join(workdir, "export")
    os.makedirs(out, exist_ok=True)
    fn, info = inference_fn(workdir, which, impl)
    _, t, h, w, c = info["input_shape"]
    batch = jax.export.symbolic_shape("B")[0]
    spec = jax.ShapeDtypeStruct((batch, t, h, w, c), jnp.float32)
    # A jitted function in the default backend's terms; jax.export then lowers it for cpu and cuda
    # alike where impl="xla" (plain StableHLO). The kernels' custom calls exist per platform.
    platforms = ("cpu", "cuda") if impl == "xla" else (jax.default_backend(),)
    # Our kernels' custom calls carry no cross-version guarantee from jax: allowed explicitly, and
    # such an artifact is for the rubiks-jax (and jaxlib) it was exported with.
    checks = ([jax.export.DisabledSafetyCheck.custom_call(t) for t in ffi_kernels.TARGETS]
              if impl == "ffi" else [])
    exported = jax.export.export(jax.jit(fn), platforms=platforms, disabled_checks=checks)(spec)
    with open(os.path.join(out, JAX_FILE), "wb") as f:
        f.write(exported.serialize())
    info["jax_exported"] = JAX_FILE
    info["platforms"] = list(platforms)
    if impl == "xla":
        _save_tf(fn, (t, h, w, c), os.path.join(out, SAVED_MODEL_DIR))
        info["saved_model"] = SAVED_MODEL_DIR
    with open(os.path.join(out, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return {**info, "out": out}


def _save_tf(fn: Callable[[jax.Array], jax.Array], frame_shape: tuple[int, ...],
             path: str) -> None:
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(fn, polymorphic_shapes=["(b, ...)"], with_gradient=False)
    module = tf.Module()
    module.logits = tf.function(
        lambda video: {"logits": converted(video)}, autograph=False,
        input_signature=[tf.TensorSpec((None,) + tuple(frame_shape), tf.float32, name="video")])
    tf.saved_model.save(module, path, signatures={"serving_default": module.logits})


def main(argv):
    quiet_logs()
    del argv
    print(json.dumps(export(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.impl), indent=2))


def _define_flags() -> None:
    # Defined for the CLI only: importing this module (tests, other tools) must not claim flag
    # names such as --workdir that other train CLIs define too.
    flags.DEFINE_string("workdir", None, "Training workdir (config.json and checkpoints/).")
    flags.DEFINE_string("step", "best",
                        "Checkpoint: 'best' (by validation top-1), 'latest' or a step.")
    flags.DEFINE_string("out", None, "Output directory (default WORKDIR/export).")
    flags.DEFINE_enum("impl", "xla", ["xla", "ffi"], "Implementation of the shift in the artifacts.")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    _define_flags()
    app.run(main)
