"""The input every video model takes: a batch of clips (N, T, H, W, 3), ImageNet-normalised."""

from __future__ import annotations

import jax


def check_video(x: jax.Array, num_frames: int) -> None:
    """Raises ValueError unless x is (N, num_frames, H, W, 3) with H, W >= 1. Any spatial size
    works, as in the published models: a stride-2 layer maps L to ceil(L / 2) (7 to 4)."""
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"x must be a video batch of shape (N, T, H, W, 3), got {tuple(x.shape)}")
    if x.shape[1] != num_frames:
        raise ValueError(f"x has {x.shape[1]} frames but the model was built with num_frames="
                         f"{num_frames}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x has an empty spatial size {x.shape[2]}x{x.shape[3]}")
