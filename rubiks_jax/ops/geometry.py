"""Static geometry of a RubiksShift call: extents, stride, padding (hashable, usable as a static arg)."""

from __future__ import annotations

import dataclasses


def out_extent(length: int, stride: int, pad: int) -> int:
    """Output length of one axis: (L + 2p - 1) // s + 1 (0 for an empty axis)."""
    return 0 if length == 0 else (length + 2 * pad - 1) // stride + 1


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Spatio-temporal extents (T, H, W) of x and y, with the per-axis stride and padding."""

    in_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]

    @property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(out_extent(n, s, p) for n, s, p in zip(self.in_size, self.stride, self.padding))

    def with_in_size(self, in_size: tuple[int, int, int]) -> "Geometry":
        return dataclasses.replace(self, in_size=tuple(in_size))
