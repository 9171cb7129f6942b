"""Independent float64 NumPy reference of the RubiksShift op and its gradients (docs/DESIGN.md,
"The op").

Written from the definition, not from the kernels: the sample point P = o*s - p + d is formed in
float64 per output index, corners are read with explicit masks, the input gradient is a scatter
(np.add.at) of the forward weights, and the shift gradient swaps one axis's weights for (-1, +1).
"""

from __future__ import annotations

import numpy as np


def out_len(n: int, s: int, p: int) -> int:
    return (n + 2 * p - 1) // s + 1


def _effective(shift: np.ndarray, quantize: bool) -> np.ndarray:
    d = np.asarray(shift, np.float64)
    return np.floor(d + 0.5) if quantize else d


def _corners(x_shape, shift, stride, padding, quantize):
    """Yields (index tuple, valid mask, weights (wt, wh, ww), corner (i, j, k)) for the 8 corners.

    Index arrays broadcast to (N, To, Ho, Wo, C)."""
    n, t, h, w, c = x_shape
    d = _effective(shift, quantize)
    axes = []
    for a, length in enumerate((t, h, w)):
        lo = out_len(length, stride[a], padding[a])
        pos = np.arange(lo)[:, None] * stride[a] - padding[a] + d[None, :, a]  # (Lo, C)
        f = np.floor(pos)
        with np.errstate(invalid="ignore"):  # non-finite shifts: those channels are not compared
            axes.append((f.astype(np.int64), pos - f, length))
    shape = (n,) + tuple(ax[0].shape[0] for ax in axes) + (c,)
    n_idx = np.arange(n).reshape(-1, 1, 1, 1, 1)
    c_idx = np.arange(c).reshape(1, 1, 1, 1, -1)
    expand = [lambda v: v[None, :, None, None, :], lambda v: v[None, None, :, None, :],
              lambda v: v[None, None, None, :, :]]
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                idx, valid, weights = [], np.ones(shape, bool), []
                for a, corner in enumerate((i, j, k)):
                    f, r, length = axes[a]
                    v = expand[a](f + corner)
                    valid = valid & (v >= 0) & (v < length)
                    idx.append(np.broadcast_to(np.clip(v, 0, length - 1), shape))
                    weights.append(expand[a](r if corner else 1.0 - r))
                index = (np.broadcast_to(n_idx, shape), *idx, np.broadcast_to(c_idx, shape))
                yield index, valid, weights, (i, j, k)


def forward(x, shift, stride=(1, 1, 1), padding=(0, 0, 0), quantize=False) -> np.ndarray:
    x = np.asarray(x, np.float64)
    y = 0.0
    for index, valid, (wt, wh, ww), _ in _corners(x.shape, shift, stride, padding, quantize):
        y = y + np.where(valid, x[index], 0.0) * wt * wh * ww
    return y


def grad_input(dy, x_shape, shift, stride=(1, 1, 1), padding=(0, 0, 0), quantize=False):
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(x_shape, np.float64)
    for index, valid, (wt, wh, ww), _ in _corners(x_shape, shift, stride, padding, quantize):
        contrib = np.broadcast_to(dy * wt * wh * ww, valid.shape)
        np.add.at(dx, tuple(ix[valid] for ix in index), contrib[valid])
    return dx


def grad_shift(x, dy, shift, stride=(1, 1, 1), padding=(0, 0, 0)) -> np.ndarray:
    """Raw dL/dshift (C, 3), the interpolation derivative at the unquantized shift."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    out = np.zeros((x.shape[-1], 3))
    for index, valid, weights, corner in _corners(x.shape, shift, stride, padding, False):
        v = np.where(valid, x[index], 0.0) * dy
        for a in range(3):
            w = [weights[b] if b != a else (1.0 if corner[a] else -1.0) for b in range(3)]
            out[:, a] += np.sum(v * w[0] * w[1] * w[2], axis=(0, 1, 2, 3))
    return out
