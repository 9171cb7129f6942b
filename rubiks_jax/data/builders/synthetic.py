"""`rubiks_synthetic`: a built-in video data set whose labels live only in the motion.

Each clip is a window onto a fine random texture that fills the whole frame and slides, the same
way in every frame, in one of four directions (left, right, up, down) at a slow or a fast speed, or
stands still: nine classes. The texture is band-pass noise (detail of about 2 to 8 pixels, no
large-scale shading) with a random tint, position and brightness, so a single frame says nothing
about the label and no object can be tracked: the class is only in how the pattern at one place
reappears displaced in the next frame. Slow clips move 1 to 2 pixels a frame, fast ones 3.5 to 7,
so telling fast directions apart takes spatio-temporal offsets of several pixels at full
resolution (docs/RESULTS.md, "Why this data set"). Clips are generated locally from a seed (no
download), deterministically.

    builder = tfds.builder("rubiks_synthetic", config="default", data_dir=...)
    builder.download_and_prepare()
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from rubiks_jax.data.features import flip_label_pairs, video_features

CLASSES = ("slow_left", "slow_right", "slow_up", "slow_down",
           "fast_left", "fast_right", "fast_up", "fast_down", "still")
# Classes a horizontal flip exchanges (the pipeline swaps them when it flips): ((0, 1), (4, 5)).
FLIP_PAIRS = tuple(flip_label_pairs(CLASSES))
_SPLIT_SEEDS = {"train": 0, "validation": 1}
# Speed ranges in pixels per frame at the stored resolution; a clip's speed is uniform in its range.
SLOW_SPEEDS, FAST_SPEEDS = (1.0, 2.0), (3.5, 7.0)
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))   # (x, y) of left, right, up, down; y points down
# Texture band: white noise filtered by the difference of two Gaussians of these widths (pixels).
_FINE_SIGMA, _COARSE_SIGMA = 0.5, 1.2


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    num_train: int = 2000
    num_validation: int = 500
    num_frames: int = 8
    size: int = 36
    seed: int = 0


def velocity(label: int, rng: np.random.Generator) -> tuple[float, float]:
    """(x, y) displacement in pixels per frame of a clip of class `label`."""
    if CLASSES[label] == "still":
        return 0.0, 0.0
    speed = rng.uniform(*(FAST_SPEEDS if CLASSES[label].startswith("fast") else SLOW_SPEEDS))
    dx, dy = _DIRECTIONS[label % 4]
    return dx * speed, dy * speed


def _texture_spectrum(rng: np.random.Generator, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """(n, n) Fourier coefficients of a periodic band-pass noise texture on the frequency grid
    (fy, fx) of an n x n canvas."""
    f = np.hypot(fy, fx)
    gain = (np.exp(-(2 * np.pi * f * _FINE_SIGMA) ** 2 / 2)
            - np.exp(-(2 * np.pi * f * _COARSE_SIGMA) ** 2 / 2))
    return np.fft.fft2(rng.standard_normal(f.shape)) * gain


def _texture_std(spectrum: np.ndarray) -> float:
    """Standard deviation of the (zero-mean) texture whose Fourier coefficients are `spectrum`:
    Parseval."""
    return float(np.sqrt(np.sum(np.abs(spectrum) ** 2)) / spectrum.size)


def render_clip(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 clip of class `label`."""
    n = 2 * size                                     # periodic canvas the window slides over
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    spectrum = _texture_spectrum(rng, fy, fx)
    std = _texture_std(spectrum)
    vx, vy = velocity(label, rng)
    tint = rng.uniform(0.5, 1.0, 3)                  # per-channel contrast: a coloured texture
    base = rng.uniform(0.35, 0.65, 3)
    top, left = rng.integers(0, n - size, 2)
    times = np.arange(num_frames) - (num_frames - 1) / 2
    clip = np.empty((num_frames, size, size, 3), np.uint8)
    for k, t in enumerate(times):
        # A translation by (vx t, vy t) pixels, sub-pixel exact: a phase ramp on the spectrum.
        image = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (fx * vx * t + fy * vy * t))).real
        image = image[top:top + size, left:left + size] / std * 0.18
        clip[k] = np.clip((base + image[..., None] * tint) * 255, 0, 255).round().astype(np.uint8)
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
    """Motion-only synthetic action recognition (9 classes: direction x speed, and still),
    generated locally."""

    VERSION = tfds.core.Version("1.4.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Quieter backgrounds, larger motions, speeds per clip duration.",
                     "1.2.0": "48x48 frames, motions defined over the whole clip.",
                     "1.3.0": "Near-uniform backgrounds, larger objects.",
                     "1.4.0": "Sliding full-frame textures, slow and fast: 8 frames of 36x36."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="2000 + 500 clips, 8 frames of 36x36"),
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
