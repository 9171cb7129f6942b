// CUDA v4 interpolation kernels (forward and input gradient): a block stages, with coalesced loads,
// the source its tile of destination points reads into shared memory, then interpolates from there.
//
// Why: in v3 a warp's 32 lanes are 32 channels of one point, each with its own integer offset, so a
// load touches about 13 sectors (docs/KERNEL_NOTES.md, the H200 profile) and a thread has 4-8 loads
// in flight. Here a warp loads all channels of one source position at a time (4 sectors in f32, 2
// in 16-bit types) and a block issues its whole stage before it waits.
//
// Tile: destination row p0 (t), kV4Rows rows along h, up to kV4PointsW points along w, kV4Channels
// channels (a warp's lanes). Its source box spans, per axis, every index any of its channels'
// corners can read: with integer offsets q_min..q_max over the tile's channels, (rows - 1) * stride
// + q_max - q_min + 2 indices (forward). When the box has more than kV4StagePositions (t, h, w)
// positions (shifts spread too far, or strides), the block runs v3's walk instead: same bits either
// way. Staged values are the source's own values converted to f32 (exactly), read by lane = channel
// from a [position][channel] array: a warp's shared loads fall in 32 distinct banks, whatever the
// offsets.
//
// Three phases with a barrier between them (the host emulation runs them in that order, and fills
// the shared memory with a NaN sentinel first, so a read of anything not staged shows in the
// result): per-channel offsets, staging, interpolation. The arithmetic is rubiks_shift_math.h's
// row_setup and interpolate_point, as in v3 and the CPU kernels.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_

#include <cstdint>

#include "rubiks_shift_kernels.h"
#include "rubiks_shift_math.h"

namespace rubiks {

constexpr int kV4Channels = 32;                  // channels per tile: a warp's lanes
constexpr int kV4Warps = kThreads / kV4Channels;  // 8
constexpr int kV4Rows = 4;                       // destination rows along h per tile
constexpr int64_t kV4PointsW = 16;               // at most this many points along w per tile
// Source positions a stage holds: 376 x 32 f32 = 47 KB, with the offsets table under the 48 KB of
// static shared memory a block may have; 4 blocks fit an SM's 228 KB.
constexpr int kV4StagePositions = 376;

struct V4Shared {
  float stage[kV4StagePositions][kV4Channels];
  int32_t q[kV4Channels][3];  // channel_shift of each channel of the tile: integer offsets,
  float r[kV4Channels][3];    // fractions,
  int32_t live[kV4Channels];  // and 1 where the channel exists and its shift is finite
};

struct V4Plan {
  int64_t rows;        // destination rows along h: ext[1]
  int64_t width;       // destination W
  int64_t h_tiles, w_tiles, c_tiles;
  int64_t tile_w;      // points per w tile (the last may be shorter)
  int64_t blocks;      // n * ext[0] * h_tiles * w_tiles * c_tiles
};

inline V4Plan plan_v4(const Geometry& g, bool adjoint) {
  const int64_t* ext = adjoint ? g.in : g.out;
  V4Plan p;
  p.rows = ext[1];
  p.width = ext[2];
  p.h_tiles = (ext[1] + kV4Rows - 1) / kV4Rows;
  p.w_tiles = p.width == 0 ? 1 : (p.width + kV4PointsW - 1) / kV4PointsW;
  p.tile_w = p.width == 0 ? 0 : (p.width + p.w_tiles - 1) / p.w_tiles;
  p.c_tiles = (g.c + kV4Channels - 1) / kV4Channels;
  p.blocks = g.n * ext[0] * p.h_tiles * p.w_tiles * p.c_tiles;
  return p;
}

// The tile of a block: channel tile fastest, then w, h, the destination frame p0 and n, so that
// consecutive blocks read neighbouring source rows (L2 reuse).
struct V4Tile {
  int64_t n, p0, h0, w0, w1, c0;  // destination rows [h0, h0 + kV4Rows), points [w0, w1)
};

RS_HD V4Tile v4_tile(const Geometry& g, bool adjoint, const V4Plan& p, int64_t block) {
  const int64_t* ext = adjoint ? g.in : g.out;
  V4Tile t;
  t.c0 = (block % p.c_tiles) * kV4Channels;
  int64_t rest = block / p.c_tiles;
  const int64_t wt = rest % p.w_tiles;
  rest /= p.w_tiles;
  t.h0 = (rest % p.h_tiles) * kV4Rows;
  rest /= p.h_tiles;
  t.p0 = rest % ext[0];
  t.n = rest / ext[0];
  t.w0 = wt * p.tile_w;
  t.w1 = t.w0 + p.tile_w < p.width ? t.w0 + p.tile_w : p.width;
  return t;
}

// Phase 1: thread l < kV4Channels records the channel shift of channel c0 + l (the other phases
// read it from there: one load of the shift per channel and block).
RS_HD void v4_offsets_phase(const float* __restrict__ shift, const Geometry& g, bool quantize,
                            const V4Tile& tile, int thread, V4Shared& sh) {
  if (thread >= kV4Channels) return;
  const int64_t c = tile.c0 + thread;
  ChannelShift cs{{0, 0, 0}, {0.f, 0.f, 0.f}, false};
  if (c < g.c) cs = channel_shift(shift + 3 * c, quantize);
  RS_SHARED_STORE(&sh.live[thread], cs.finite ? 1 : 0);
  for (int a = 0; a < 3; ++a) {
    RS_SHARED_STORE(&sh.q[thread][a], static_cast<int32_t>(cs.q[a]));  // |q| <= 2^30
    RS_SHARED_STORE(&sh.r[thread][a], cs.r[a]);
  }
}

// The channel shift phase 1 recorded for lane l (a channel of the tile that exists).
RS_HD ChannelShift v4_channel_shift(const V4Shared& sh, int l) {
  ChannelShift cs;
  cs.finite = RS_SHARED_LOAD(&sh.live[l]) != 0;
  for (int a = 0; a < 3; ++a) {
    cs.q[a] = RS_SHARED_LOAD(&sh.q[l][a]);
    cs.r[a] = RS_SHARED_LOAD(&sh.r[l][a]);
  }
  return cs;
}

// The source box of a tile: per axis its first index and extent. staged: it fits the stage.
struct V4Box {
  int64_t lo[3], n[3];
  bool staged;
};

// Source index range that destination indices [d_lo, d_hi] on axis a read with offsets in
// [q_lo, q_hi], corners included: forward o * s - pad + q + k; adjoint the o with o * s = i + pad -
// q - k (every integer o in the range, divisible or not).
template <bool kAdjoint>
RS_HD void v4_axis_range(const Geometry& g, int a, int64_t d_lo, int64_t d_hi, int64_t q_lo,
                         int64_t q_hi, int64_t* lo, int64_t* hi) {
  if constexpr (kAdjoint) {
    *lo = floor_div<int64_t>(d_lo + g.pad[a] - q_hi - 1, g.stride[a]);
    *hi = floor_div<int64_t>(d_hi + g.pad[a] - q_lo, g.stride[a]);
  } else {
    *lo = d_lo * g.stride[a] - g.pad[a] + q_lo;
    *hi = d_hi * g.stride[a] - g.pad[a] + q_hi + 1;
  }
}

template <bool kAdjoint>
RS_HD V4Box v4_box(const Geometry& g, const V4Tile& tile, const V4Plan& plan, const V4Shared& sh) {
  int64_t q_lo[3] = {0, 0, 0}, q_hi[3] = {0, 0, 0};
  bool any = false;
  for (int l = 0; l < kV4Channels; ++l) {
    if (!RS_SHARED_LOAD(&sh.live[l])) continue;
    for (int a = 0; a < 3; ++a) {
      const int64_t q = RS_SHARED_LOAD(&sh.q[l][a]);
      q_lo[a] = any && q_lo[a] < q ? q_lo[a] : q;
      q_hi[a] = any && q_hi[a] > q ? q_hi[a] : q;
    }
    any = true;
  }
  V4Box box;
  const int64_t h1 = tile.h0 + kV4Rows <= plan.rows ? tile.h0 + kV4Rows - 1 : plan.rows - 1;
  const int64_t d_lo[3] = {tile.p0, tile.h0, tile.w0}, d_hi[3] = {tile.p0, h1, tile.w1 - 1};
  box.staged = any && tile.w1 > tile.w0;
  for (int a = 0; a < 3; ++a) {
    int64_t lo, hi;
    v4_axis_range<kAdjoint>(g, a, d_lo[a], d_hi[a], q_lo[a], q_hi[a], &lo, &hi);
    box.lo[a] = lo;
    box.n[a] = hi - lo + 1;
    box.staged = box.staged && box.n[a] <= kV4StagePositions;
  }
  box.staged = box.staged && box.n[0] * box.n[1] * box.n[2] <= kV4StagePositions;
  return box;
}

// Phase 2: the block loads its box, warp by warp one source position (all the tile's channels) at a
// time; positions outside the source read the nearest one inside (only absent corners, whose terms
// are dropped, read them).
template <DType D, bool kAdjoint, typename I>
RS_HD void v4_stage_phase(const typename Storage<D>::T* __restrict__ src, const Geometry& g,
                          const V4Plan& plan, const V4Tile& tile, int thread, V4Shared& sh) {
  const V4Box box = v4_box<kAdjoint>(g, tile, plan, sh);
  if (!box.staged) return;
  const int lane = thread % kV4Channels;
  const int64_t c = tile.c0 + lane;
  if (c >= g.c) return;
  const int64_t* ext = kAdjoint ? g.out : g.in;
  I positions = static_cast<I>(box.n[0] * box.n[1] * box.n[2]);
#if defined(RUBIKS_V4_SHORT_STAGE)
  positions -= static_cast<I>(box.n[2]);  // a deliberate bug for the tests: one w row short
#endif
  const I nw = static_cast<I>(box.n[2]), nhw = static_cast<I>(box.n[1] * box.n[2]);
  RS_TRACE_SCOPE();
  for (I pos = thread / kV4Channels; pos < positions; pos += kV4Warps) {
    const int64_t t = clamp_index(box.lo[0] + pos / nhw, ext[0]);
    const int64_t h = clamp_index(box.lo[1] + (pos / nw) % static_cast<I>(box.n[1]), ext[1]);
    const int64_t w = clamp_index(box.lo[2] + pos % nw, ext[2]);
    const I at = static_cast<I>(offset(g, tile.n, t, h, w, ext) + c);
    RS_SHARED_STORE(&sh.stage[pos][lane], Storage<D>::load(RS_LOAD(src + at)));
  }
}

// A point's corners from the stage: position (t slot i, h slot j, w slot k), this thread's lane.
struct StagedCorners {
  const V4Shared& sh;
  int lane;
  int32_t th[2][2];  // position of (t slot i, h slot j) at w slot 0
  int32_t w[2];      // w slot of corner k
  RS_HD float operator()(int i, int j, int k) const {
    return RS_SHARED_LOAD(&sh.stage[th[i][j] + w[k]][lane]);
  }
};

RS_HD int64_t clamp_slot(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// Phase 3: warp k interpolates destination row h0 + k / 2, half k % 2 of the tile's points, lane =
// channel; a tile that did not fit the stage walks the row as v3 does.
template <DType D, bool kAdjoint, bool kUnitW, typename I>
RS_HD void v4_interpolate_phase(const typename Storage<D>::T* __restrict__ src,
                                typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                                const V4Plan& plan, const V4Tile& tile, int thread,
                                const V4Shared& sh) {
  constexpr int kWarpsPerRow = kV4Warps / kV4Rows;
  const int lane = thread % kV4Channels, warp = thread / kV4Channels;
  const int64_t c = tile.c0 + lane, p1 = tile.h0 + warp / kWarpsPerRow;
  if (c >= g.c || p1 >= plan.rows) return;
  const int64_t half = (tile.w1 - tile.w0 + kWarpsPerRow - 1) / kWarpsPerRow;
  const int64_t begin = tile.w0 + (warp % kWarpsPerRow) * half;
  const int64_t end = begin + half < tile.w1 ? begin + half : tile.w1;
  if (begin >= end) return;
  const int64_t* ext = kAdjoint ? g.in : g.out;
  const I C = static_cast<I>(g.c);
  typename Storage<D>::T* row_dst =
      dst + static_cast<I>(offset(g, tile.n, tile.p0, p1, 0, ext) + c);
  const ChannelShift cs = v4_channel_shift(sh, lane);
  const V4Box box = v4_box<kAdjoint>(g, tile, plan, sh);
  if (!box.staged || !cs.finite) {
    interpolate_row<D, kAdjoint, kUnitW, I>(src, row_dst, g, cs, tile.n, tile.p0, p1, c, begin,
                                            end);
    return;
  }
  const RowSetup<I> r = row_setup<I, kAdjoint, /*kWeighted=*/true>(g, cs, tile.n, tile.p0, p1, c);
  // Source index of corner k along t and h (any in-box slot for an absent one: its term is dropped).
  auto source = [&](int a, int64_t o, int k) -> int64_t {
    if constexpr (kAdjoint) {
      const int64_t i = adjoint_tap(g, cs, a, o, k);
      return i < 0 ? box.lo[a] : i;
    } else {
      return forward_index(g, cs, a, o, k);
    }
  };
  StagedCorners corners{sh, lane, {}, {}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      corners.th[i][j] = static_cast<int32_t>(
          (clamp_slot(source(0, tile.p0, i) - box.lo[0], box.n[0]) * box.n[1] +
           clamp_slot(source(1, p1, j) - box.lo[1], box.n[1])) * box.n[2]);
  const int64_t q = saturated_q(g, cs, 2), sw = g.stride[2], pad = g.pad[2];
  const int64_t w_extent = kAdjoint ? g.out[2] : g.in[2];
  RS_TRACE_SCOPE();
  for (int64_t p = begin; p < end; ++p) {
    bool w_on[2];
    for (int k = 0; k < 2; ++k) {
      int64_t idx;  // source column of corner k
      bool hit = true;
      if constexpr (kAdjoint) {
        const int64_t num = p + pad - q - k;
        idx = floor_div<int64_t>(num, sw);
        hit = idx * sw == num;
      } else {
        idx = p * sw - pad + q + k;
      }
      w_on[k] = r.w_use[k] && hit && idx >= 0 && idx < w_extent;
      corners.w[k] = static_cast<int32_t>(clamp_slot(idx - box.lo[2], box.n[2]));
    }
    RS_STORE(row_dst + static_cast<I>(p) * C,
             Storage<D>::store(interpolate_point<I, false>(r, corners, w_on)));
    RS_TRACE_POINT();
  }
}

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_
