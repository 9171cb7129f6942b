"""The video input check shared by the models."""

import jax.numpy as jnp
import pytest

from rubiks_jax.models.inputs import check_video


def test_check_video():
    check_video(jnp.zeros((2, 4, 16, 48, 3)), 4)
    check_video(jnp.zeros((2, 4, 7, 13, 3)), 4)  # any spatial size, as the published models
    with pytest.raises(ValueError, match=r"shape \(N, T, H, W, 3\)"):
        check_video(jnp.zeros((2, 4, 16, 16, 1)), 4)
    with pytest.raises(ValueError, match="has 5 frames but the model was built with num_frames=4"):
        check_video(jnp.zeros((2, 5, 16, 16, 3)), 4)
    with pytest.raises(ValueError, match="empty spatial size 0x16"):
        check_video(jnp.zeros((2, 4, 0, 16, 3)), 4)
