"""Timing helpers shared by the benchmark suites: compile outside the timed region, block until
ready, fresh random inputs per repeat, median and spread."""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import jax


@dataclasses.dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def time_fn(fn: Callable, make_inputs: Callable[[int], Sequence], repeats: int,
            warmup: int = 1) -> Timing:
    """Times jitted `fn(*make_inputs(i))`; inputs are built and made ready before each clock start."""
    for i in range(warmup):  # compiles and warms caches; never timed
        jax.block_until_ready(fn(*make_inputs(-1 - i)))
    samples = []
    for i in range(repeats):
        args = jax.block_until_ready(tuple(make_inputs(i)))
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


def on_accelerator() -> bool:
    return jax.default_backend() != "cpu"


def default_repeats(cpu: int, gpu: int) -> int:
    """Repeats per entry: accelerators run many cheap repeats, the CPU fewer expensive ones."""
    return gpu if on_accelerator() else cpu


def machine_description() -> str:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    import os
    return (f"{kind} ({dev.platform}), {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
            f"jax {jax.__version__}")
