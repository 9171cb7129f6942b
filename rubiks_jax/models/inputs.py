"""The input every video model takes: a batch of clips (N, T, H, W, 3), ImageNet-normalised."""

from __future__ import annotations

import jax


def check_video(x: jax.Array, num_frames: int, spatial_stride: int) -> None:
    """Raises ValueError unless x is (N, num_frames, H, W, 3) with H and W divisible by the model's
    total spatial stride."""
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"x must be a video batch of shape (N, T, H, W, 3), got {tuple(x.shape)}")
    if x.shape[1] != num_frames:
        raise ValueError(f"x has {x.shape[1]} frames but the model was built with num_frames="
                         f"{num_frames}")
    if x.shape[2] % spatial_stride or x.shape[3] % spatial_stride:
        raise ValueError(f"x's spatial size {x.shape[2]}x{x.shape[3]} must be divisible by "
                         f"{spatial_stride}")
