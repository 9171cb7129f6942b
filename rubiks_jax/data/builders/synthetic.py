"""`rubiks_synthetic`: a built-in video data set whose labels live only in the motion.

Each clip shows a textured object (square, disc or diamond with its own random texture) on a
textured background. The class is how the object moves over time: left, right, up, down,
approaching (growing), receding (shrinking), rotating clockwise or counter-clockwise, or still.
Start position, size, orientation, speed, textures and shape are random, and sizes and positions
are drawn so that their distributions over single frames overlap across classes: one frame says
nothing about the label. Clips are generated locally from a seed (no download), deterministically.

    builder = tfds.builder("rubiks_synthetic", config="default", data_dir=...)
    builder.download_and_prepare()
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from rubiks_jax.data.features import flip_label_pairs, video_features

CLASSES = ("move_left", "move_right", "move_up", "move_down", "approach", "recede",
           "rotate_clockwise", "rotate_counterclockwise", "still")
# Classes a horizontal flip exchanges (the pipeline swaps them when it flips): ((0, 1), (6, 7)).
FLIP_PAIRS = tuple(flip_label_pairs(CLASSES))
_SPLIT_SEEDS = {"train": 0, "validation": 1}


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    num_train: int = 2000
    num_validation: int = 500
    num_frames: int = 16
    size: int = 48
    seed: int = 0


def _texture(rng: np.random.Generator, size: int, cells: int,
             contrast: tuple[float, float]) -> np.ndarray:
    """(size, size, 3) float texture: smooth random colour field from a cells x cells grid, its
    deviation from mid-grey scaled by a contrast drawn from `contrast`."""
    grid = rng.random((cells + 1, cells + 1, 3))
    coords = np.linspace(0, cells, size, endpoint=False)
    i0 = coords.astype(int)
    f = (coords - i0)[:, None]
    rows = grid[i0] * (1 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]   # (size, cells+1, 3)
    cols = rows[:, i0] * (1 - f.T[:, :, None]) + rows[:, i0 + 1] * f.T[:, :, None]
    base = rng.uniform(0.3, 0.7, 3)
    return np.clip(base + (cols - 0.5) * rng.uniform(*contrast) * 2, 0, 1)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == 0:
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)      # square
    if shape == 1:
        return u * u + v * v <= 1                      # disc
    return np.abs(u) + np.abs(v) <= 1                  # diamond


def render_clip(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 clip of class `label`."""
    # A quiet background and a contrasted object: the motion, not the camouflage, is the task.
    background = _texture(rng, size, int(rng.integers(2, 5)), (0.05, 0.15))
    texture = _texture(rng, 32, int(rng.integers(2, 5)), (0.8, 1.0))
    shape = int(rng.integers(0, 3))
    mid = (num_frames - 1) / 2
    t = (np.arange(num_frames) - mid) / (num_frames - 1)  # clip time in [-1/2, 1/2]
    # Motions are large over the clip (a model sees 8 of its frames at low resolution).
    radius_mid = rng.uniform(0.13, 0.18) * size
    speed = rng.uniform(0.45, 0.6) * size              # pixels per clip
    growth = rng.uniform(0.8, 1.1)                     # log size change per clip
    spin = np.deg2rad(rng.uniform(150.0, 220.0))       # radians per clip
    theta0 = rng.uniform(0, 2 * np.pi)
    velocity = {0: (-speed, 0), 1: (speed, 0), 2: (0, -speed), 3: (0, speed)}.get(label, (0, 0))
    radius = radius_mid * np.exp({4: growth, 5: -growth}.get(label, 0.0) * t)
    theta = theta0 + {6: spin, 7: -spin}.get(label, 0.0) * t
    # The middle position is drawn so the object's centre stays inside the frame all along.
    margin = radius.max() * 0.8 + np.abs(np.array(velocity)) * np.abs(t).max()
    centre_mid = rng.uniform(margin, size - margin)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    clip = np.empty((num_frames, size, size, 3), np.uint8)
    for k in range(num_frames):
        cx = centre_mid[0] + velocity[0] * t[k]
        cy = centre_mid[1] + velocity[1] * t[k]
        dx, dy = (xs - cx) / radius[k], (ys - cy) / radius[k]
        # Object coordinates: rotating by +theta (clockwise on screen, y pointing down).
        c, s = np.cos(theta[k]), np.sin(theta[k])
        u, v = c * dx + s * dy, -s * dx + c * dy
        mask = _inside(shape, u, v)
        tu = np.clip(((u + 1) / 2 * 31).round().astype(int), 0, 31)
        tv = np.clip(((v + 1) / 2 * 31).round().astype(int), 0, 31)
        frame = np.where(mask[..., None], texture[tv, tu], background)
        clip[k] = (frame * 255).round().astype(np.uint8)
    return clip


def generate(split_seed: int, config: SyntheticConfig, count: int):
    """Yields (key, example) for `count` clips with balanced, shuffled labels, all determined by
    (config.seed, split_seed)."""
    rng = np.random.default_rng([config.seed, split_seed])
    labels = np.resize(np.arange(len(CLASSES)), count)
    rng.shuffle(labels)
    for i, label in enumerate(labels):
        clip_rng = np.random.default_rng([config.seed, split_seed, i])
        clip = render_clip(clip_rng, int(label), config.num_frames, config.size)
        yield f"{split_seed}_{i}", {"video": clip, "label": int(label), "video_id": f"clip_{i:06d}"}


class RubiksSynthetic(tfds.core.GeneratorBasedBuilder):
    """Motion-only synthetic action recognition (9 classes), generated locally."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Quieter backgrounds, larger motions, speeds per clip duration.",
                     "1.2.0": "48x48 frames, motions defined over the whole clip.",
                     "1.3.0": "Near-uniform backgrounds, larger objects."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="2000 + 500 clips, 16 frames of 48x48",
                        size=48),
        SyntheticConfig(name="small", description="tiny set for tests: 36 + 18 clips, 8 x 32x32",
                        num_train=36, num_validation=18, num_frames=8, size=32),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=video_features(CLASSES, encoding_format="png",
                                    frame_shape=(cfg.size, cfg.size)),
            supervised_keys=("video", "label"),
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.num_train),
                "validation": self._generate_examples("validation", cfg.num_validation)}

    def _generate_examples(self, split: str, count: int):
        yield from generate(_SPLIT_SEEDS[split], self.builder_config, count)
