"""tools/gpu_memory_model.py and its trace (tools/memory_trace.cc): counts worked out by hand on a
tiny launch, the H200 profile's sectors per request at the paper shape, v4 against v3 bit for bit
with a deliberately broken stage caught, and the time model's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from tools import gpu_memory_model as mm

PAPER = mm.Shape(8, (8, 56, 56), 72)


@pytest.fixture(scope="module")
def lib():
    return mm.library()


def test_trace_counts_a_launch_worked_out_by_hand(lib):
    """One warp: 32 channels of a 1 x 1 x 8 row, zero shift. Each lane loads its 3 shift values
    (12-byte stride: 12 sectors a request), then walks 8 points with all 8 corners loaded at
    clamped addresses (32 consecutive channels: 4 sectors), and stores 8 points (4 sectors)."""
    shape = mm.Shape(1, (1, 1, 8), 32)
    s = mm.trace(lib, "forward", "v3", "float32", shape, np.zeros((32, 3), np.float32), 0)
    assert (s["blocks"], s["total_blocks"], s["threads"]) == (1, 1, 32)
    assert (s["load_requests"], s["load_sectors"]) == (3 + 8 * 8, 3 * 12 + 8 * 8 * 4)
    assert (s["store_requests"], s["store_sectors"]) == (8, 8 * 4)
    assert s["load_lanes"] == 32 * (3 + 64) and s["load_bytes"] == 4 * 32 * (3 + 64)
    # Batches: the shift loads, then one per point.
    assert (s["batches"], s["batch_sectors"]) == (1 + 8, s["load_sectors"])
    # Distinct sectors the block loads: the shift (12) and the row (8 points x 4).
    assert s["block_load_sectors"] == 12 + 8 * 4
    assert s["shared_requests"] == 0


def test_v2_matches_the_h200_profile_within_15_percent(lib):
    """ncu on the H200 (docs/KERNEL_NOTES.md): 13.6 sectors per load request and 5.7 per store in
    the forward and input gradient, 11.8 and 12.0 in pass 1; a sample of 48 blocks per launch."""
    shift = mm.profile_shift(PAPER.c)
    for kernel in mm.KERNELS:
        ref = mm.CALIBRATION[("v2", kernel)]
        s = mm.trace(lib, kernel, "v2", "float32", PAPER, shift, 48)
        load, store = s["load_sectors"] / s["load_requests"], s["store_sectors"] / s["store_requests"]
        assert abs(load / ref["load_spr"] - 1) < 0.15, (kernel, load)
        assert abs(store / ref["store_spr"] - 1) < 0.15, (kernel, store)


def test_v4_loads_are_coalesced_and_stage_in_shared_memory(lib):
    """The v4 target: at most 5 sectors per load request at the paper shape (v3: about 12), its
    shared-memory reads free of bank conflicts in f32."""
    shift = mm.profile_shift(PAPER.c)
    v3 = mm.trace(lib, "forward", "v3", "float32", PAPER, shift, 48)
    v4 = mm.trace(lib, "forward", "v4", "float32", PAPER, shift, 48)
    assert v3["load_sectors"] / v3["load_requests"] > 10
    assert v4["load_sectors"] / v4["load_requests"] <= 5
    assert v4["shared_requests"] > 0
    assert v4["shared_wavefronts"] == v4["shared_requests"]


# (shape, spread of the shift): staged tiles at every edge, C not a multiple of 32, strides in t
# and h, padding, and a spread some tiles cannot stage (they walk v3's way).
V4_GEOMETRIES = [
    (mm.Shape(2, (3, 9, 37), 40), 1.0),
    (mm.Shape(1, (6, 8, 18), 35, stride=(2, 2, 1), pad=(1, 0, 0)), 1.0),
    (mm.Shape(1, (4, 7, 20), 70, pad=(1, 2, 2)), 3.0),
]


@pytest.mark.slow
def test_v4_gives_v3_bits_and_a_short_stage_does_not(lib):
    short = mm.library(("RUBIKS_V4_SHORT_STAGE",))  # the stage one w row short
    rng = np.random.default_rng(0)
    caught = 0
    for shape, spread in V4_GEOMETRIES:
        shift = rng.uniform(-spread, spread, (shape.c, 3)).astype(np.float32)
        for kernel in ("forward", "input_grad"):
            for dtype in ("float32", "bfloat16"):
                assert mm.v4_mismatches(lib, kernel, dtype, shape, shift) == 0
                assert mm.v4_mismatches(lib, kernel, dtype, shape, shift, quantize=True) == 0
                caught += mm.v4_mismatches(short, kernel, dtype, shape, shift) > 0
    assert caught >= 10  # of 12: a stage one row short shows almost everywhere


def _row(registers=56, warps=32, blocks=4, loop=40):
    return dict(registers=registers, warps_per_sm=warps, blocks_per_sm=blocks,
                spill_store_bytes=0, spill_load_bytes=0, point_loop={"instructions": loop},
                fast_loop=None, loop=None)


def test_time_model_takes_the_largest_bound():
    """Made-up counts: 264 blocks of 8 warps on 132 SMs at 4 blocks each (half a wave), each warp
    10 batches of 50 sectors and 20 iterations of 40 instructions."""
    gpu = mm.GPU(latency_base_ns=500.0, latency_per_sector_ns=2.0)
    blocks = 264
    stats = dict(blocks=2, total_blocks=blocks, threads=512, load_requests=100, load_sectors=500,
                 load_lanes=3200, load_bytes=12800, store_requests=10, store_sectors=40,
                 store_lanes=320, store_bytes=1280, block_load_sectors=300,
                 block_store_sectors=40, batches=160, batch_sectors=8000, shared_requests=0,
                 shared_wavefronts=0, warp_iterations=320)
    r = mm.evaluate(stats, _row(), "forward", "v3", "float32", PAPER, gpu)
    assert r["batches_per_warp"] == 10 and r["sectors_per_batch"] == 50
    chain_ns = 10 * (500 + 2 * 50) + 20 * 40 / gpu.clock_ghz
    assert r["latency_bound_us"] == pytest.approx(chain_ns / 1e3)  # one (partial) wave
    assert r["floor_us"] == pytest.approx(2 * PAPER.elements(PAPER.size) * 4 / 3.8e12 * 1e6)
    assert r["predicted_us"] == max(r["floor_us"], r["latency_bound_us"], r["l1_bound_us"],
                                    r["issue_bound_us"])
    # Half a wave: 16 warps per SM are resident, not the 32 the registers allow.
    assert r["bytes_in_flight_per_sm"] == 16 * 50 * 32


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit, match="--shape: expected N,T,H,W,C"):
        mm.parse_shape("8,8,56")
    with pytest.raises(SystemExit, match="--shape: every extent must be positive"):
        mm.parse_shape("8,8,0,56,72")
    with pytest.raises(SystemExit, match="--dtypes: unknown dtype 'float64'"):
        mm.main(["--dtypes", "float64"])
    with pytest.raises(SystemExit, match="--versions: unknown version 'v9'"):
        mm.main(["--versions", "v9"])
