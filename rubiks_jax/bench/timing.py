"""Timing helpers shared by the benchmark suites: compile outside the timed region, block until
ready, fresh random inputs per repeat, median and spread.

`time_fn` times one jitted call per sample (whole steps: the block and model suites).
`time_per_call` times K back-to-back calls inside one jitted loop per sample (single ops whose
device time is comparable to the dispatch overhead of one call: the op suite)."""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

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


@dataclasses.dataclass
class LoopTiming(Timing):
    """Per-call times (median_s, min_s, max_s: one sample's time / iters) of `time_per_call`."""

    iters: int  # calls per sample (K): back-to-back calls inside one jitted loop
    sample_median_s: float  # median wall time of one whole sample (K calls), seconds


Carry = Any  # a pytree of arrays: what one call reads and the next call's inputs


def loop_calls(step: Callable[[Carry], Carry], iters: int,
               calls_per_trip: int = 2) -> Callable[[Carry], Carry]:
    """One jitted function that applies `step` `iters` times back to back: carry -> carry.

    `step` must make its returned carry depend on every output it wants computed (outputs nothing
    reads are dead code to XLA) and feed each call's inputs from the previous call, so XLA can
    neither hoist a call out of the loop as invariant nor merge calls; each element of its carry
    should be either a new output or passed through unchanged.

    The loop (a `fori_loop` with a static trip count: XLA records `known_trip_count` on the
    compiled while, and a GPU runs it without reading the loop condition back to the host every
    trip) makes `calls_per_trip` calls per trip; `iters` must be 1 or a multiple of it.
    - 2 for ops that cannot write their output over their input (custom calls): with one call per
      trip XLA copies every output into its input's loop-state buffer; with two, the second call
      writes straight into the buffer of the first call's input, dead by then.
    - 1 for elementwise steps: they update the loop state in place, and XLA:CPU would fuse two of
      them in one trip into a single pass.
    Optimisation barriers between calls keep XLA from simplifying across calls (x -> -x twice
    would be x) and, on a GPU, from fusing across them (XLA:CPU drops barriers before fusion).
    They cost nothing at run time. The carry is donated, so the loop state reuses the input
    buffers instead of copying them in.
    """
    if calls_per_trip < 1 or iters < 1 or (iters != 1 and iters % calls_per_trip):
        raise ValueError(f"iters must be 1 or a multiple of calls_per_trip={calls_per_trip}, "
                         f"got {iters}")
    calls_per_trip = min(calls_per_trip, iters)

    def trip(_trip_index: int, carry: Carry) -> Carry:
        for _ in range(calls_per_trip):
            carry = jax.lax.optimization_barrier(step(carry))
        return carry

    return jax.jit(lambda carry: jax.lax.fori_loop(0, iters // calls_per_trip, trip, carry),
                   donate_argnums=0)


def _time_once(run: Callable[[Carry], Carry], carry: Carry) -> float:
    carry = jax.block_until_ready(carry)
    start = time.perf_counter()
    jax.block_until_ready(run(carry))
    return time.perf_counter() - start


def time_per_call(step: Callable[[Carry], Carry], make_carry: Callable[[int], Carry], repeats: int,
                  target_s: float = 0.02, calls_per_trip: int = 2, max_iters: int = 1 << 14,
                  max_rounds: int = 3, iters: int | None = None) -> LoopTiming:
    """Device time of one `step` call, without the dispatch overhead of a call from Python.

    Why: a jitted call costs tens of microseconds of dispatch (Python, argument handling, launch)
    on top of its device time, which is most of the wall clock of an op that runs ~40 us on a GPU.
    So each sample runs K = `iters` calls inside one jitted loop (`loop_calls`) and the per-call
    time is the sample's wall time / K: the one-off costs of a sample (the dispatch of the loop
    call; on the CPU also the first touch of the buffers the program allocates, ~2 us per 4 KiB
    page) are spread over K calls. `target_s` should make them small against the sample. The
    same code runs on every backend; where one call already lasts longer than the target, K = 1.

    Args:
      step: carry -> carry, one call of the op under test; traced into the loop body.
      make_carry: i -> the initial carry (a pytree of arrays) of sample i; called with fresh
        indices for every sample (negative ones for calibration and warm-up); the loop consumes
        (donates) it.
      repeats: timed samples.
      target_s: wall time one sample should last, in seconds; K is calibrated for it: starting at
        K = 1, each round compiles the loop, runs it once untimed (compile, warm-up), times one run
        and scales K up by target / measured, for at most `max_rounds` rounds (the first estimate
        still includes dispatch, so it undershoots K; the next round corrects it).
      calls_per_trip: calls per loop trip (`loop_calls`); K is 1 or a multiple of it.
      max_iters: upper bound on K.
      iters: a fixed K instead of the calibration (one compile; smoke runs).
    Returns:
      LoopTiming: per-call median / min / max in seconds over `repeats` samples, K, and the median
      wall time of a whole sample.
    """
    fixed = iters is not None
    iters, index = iters or 1, -1
    for round_ in range(max_rounds):
        run = loop_calls(step, iters, calls_per_trip)
        for _ in range(1 if fixed else 2):  # compile and warm up; then time the estimate
            elapsed = _time_once(run, make_carry(index))
            index -= 1
        if fixed or elapsed >= target_s or iters >= max_iters or round_ == max_rounds - 1:
            break
        # 1.2: aim a little past the target so the sample does not end just short of it.
        wanted = min(max_iters, math.ceil(1.2 * iters * target_s / elapsed))
        iters = calls_per_trip * math.ceil(wanted / calls_per_trip)
    samples = [_time_once(run, make_carry(i)) for i in range(repeats)]
    per_call = [s / iters for s in samples]
    return LoopTiming(statistics.median(per_call), min(per_call), max(per_call), repeats, iters,
                      statistics.median(samples))


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
