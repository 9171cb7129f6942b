// CUDA v4 interpolation kernels (forward and input gradient): a block stages, with coalesced loads,
// the source its tile of destination points reads into shared memory, then interpolates from there.
//
// Why: in v3 a warp's 32 lanes are 32 channels of one point, each with its own integer offset, so a
// load touches about 12 sectors (docs/KERNEL_NOTES.md: the H200 profile and the memory model) and a
// thread has 4-8 loads in flight. Here a warp loads all channels of one source position at a time
// (4 sectors in f32, 2 in 16-bit types) and a block issues its whole stage before it waits.
//
// Tile: destination frame p0 (t), kV4Rows rows along h, up to kV4PointsW points along w and
// kV4Channels channels (a warp's lanes). Its source box spans, per axis, every index any of its
// channels' corners can read (with integer offsets q_lo..q_hi over the tile's channels:
// (rows - 1) * stride + q_hi - q_lo + 2 indices, forward), clamped to the source: the kernels
// read absent corners at clamped indices, and clamping is monotonic, so every read falls inside. When the box has more
// positions than the stage holds (shifts spread too far, strides along w), the block runs v3's walk
// from global memory instead. The stage is laid out like an f32 tensor with kV4Channels channels
// (16-bit sources are converted, exactly, as they are staged), so the interpolation is walk_row
// itself (carried interior, all-corners-present loops) reading shared memory: the same arithmetic
// on the same values, hence the same bits, as v3 and the CPU kernels.
//
// Four phases with a barrier between them (the host emulation runs them in that order, and fills
// the shared memory with a NaN sentinel first, so a read of anything not staged shows in the
// result): channel shifts, offset ranges, staging, interpolation.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_

#include <cstdint>
#include <cstring>

#include "rubiks_shift_kernels.h"
#include "rubiks_shift_math.h"

namespace rubiks {

constexpr int kV4Channels = 32;                   // channels per tile: a warp's lanes
constexpr int kV4Warps = kThreads / kV4Channels;  // 8
constexpr int kV4Rows = 8;                        // destination rows along h per tile
constexpr int64_t kV4PointsW = 8;                 // at most this many points along w per tile
// 8 x 8 points: a box of 3 x 10 x 10 positions at offsets in {-1, 0} (4.7 per point; 4 x 16 needed
// 5.1, 2 x 28 6.4), and by the memory model the fastest of those three (docs/KERNEL_NOTES.md).
constexpr int kV4StageBatch = 16;                 // staging loads a warp issues before it waits
// The stage holds 376 source positions as f32 (16-bit sources converted as they are staged, so
// the interpolation reads them without a conversion per corner): 47 KB, so that with the tables
// below a block stays under the 48 KB of static shared memory and 4 blocks fit an SM's 228 KB.
constexpr int kV4StagePositions = 376;

struct alignas(128) V4Shared {
  float stage[kV4StagePositions][kV4Channels];
  int32_t q[kV4Channels][3];  // channel_shift of each channel of the tile: integer offsets (w
  float r[kV4Channels][3];    // saturated), fractions,
  int32_t live[kV4Channels];  // and 1 where the channel exists and its shift is finite
  int32_t q_range[2][3];      // lowest and highest offset per axis over the live channels
};

struct V4Plan {
  int64_t rows;   // destination rows along h: ext[1]
  int64_t width;  // destination W
  int64_t h_tiles, w_tiles, c_tiles;
  int64_t tile_w;  // points per w tile (the last may be shorter)
  int64_t blocks;  // n * ext[0] * h_tiles * w_tiles * c_tiles
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
  int64_t n, p0, h0, h1, w0, w1, c0;  // destination rows [h0, h1), points [w0, w1)
};

RS_HD V4Tile v4_tile(const Geometry& g, bool adjoint, const V4Plan& p, int64_t block) {
  const int64_t* ext = adjoint ? g.in : g.out;
  V4Tile t;
  t.c0 = (block % p.c_tiles) * kV4Channels;
  int64_t rest = block / p.c_tiles;
  const int64_t wt = rest % p.w_tiles;
  rest /= p.w_tiles;
  t.h0 = (rest % p.h_tiles) * kV4Rows;
  t.h1 = t.h0 + kV4Rows < p.rows ? t.h0 + kV4Rows : p.rows;
  rest /= p.h_tiles;
  t.p0 = rest % ext[0];
  t.n = rest / ext[0];
  t.w0 = wt * p.tile_w;
  t.w1 = t.w0 + p.tile_w < p.width ? t.w0 + p.tile_w : p.width;
  return t;
}

// Phase 1: thread l < kV4Channels records the channel shift of channel c0 + l (the other phases
// read it from there: one load of the shift per channel and block).
RS_HD void v4_shift_phase(const float* __restrict__ shift, const Geometry& g, bool quantize,
                          const V4Tile& tile, int thread, V4Shared& sh) {
  if (thread >= kV4Channels) return;
  const int64_t c = tile.c0 + thread;
  ChannelShift cs{{0, 0, 0}, {0.f, 0.f, 0.f}, false};
  if (c < g.c) cs = channel_shift(shift + 3 * c, quantize);
  // w as the w walk uses it (saturated: the same walk, and the box stays near the tensor).
  cs.q[2] = saturated_q(g, cs, 2);
  RS_SHARED_STORE(&sh.live[thread], cs.finite ? 1 : 0);
  for (int a = 0; a < 3; ++a) {
    RS_SHARED_STORE(&sh.q[thread][a], static_cast<int32_t>(cs.q[a]));  // |q| <= 2^30
    RS_SHARED_STORE(&sh.r[thread][a], cs.r[a]);
  }
}

// Phase 2: thread 3 * e + a (e = 0: lowest, 1: highest) reduces axis a's offsets over the live
// channels. No live channel: lowest > highest.
RS_HD void v4_range_phase(int thread, V4Shared& sh) {
  if (thread >= 6) return;
  const int a = thread % 3, e = thread / 3;
  int32_t v = e ? -0x7fffffff : 0x7fffffff;
  for (int l = 0; l < kV4Channels; ++l) {
    if (!RS_SHARED_LOAD(&sh.live[l])) continue;
    const int32_t q = RS_SHARED_LOAD(&sh.q[l][a]);
    v = e ? (q > v ? q : v) : (q < v ? q : v);
  }
  RS_SHARED_STORE(&sh.q_range[e][a], v);
}

// The channel shift phase 1 recorded for lane l.
RS_HD ChannelShift v4_channel_shift(const V4Shared& sh, int l) {
  ChannelShift cs;
  cs.finite = RS_SHARED_LOAD(&sh.live[l]) != 0;
  for (int a = 0; a < 3; ++a) {
    cs.q[a] = RS_SHARED_LOAD(&sh.q[l][a]);
    cs.r[a] = RS_SHARED_LOAD(&sh.r[l][a]);
  }
  return cs;
}

// The source box of a tile: per axis its first index and extent, inside the source. staged: it
// fits the stage (else the block walks v3's way).
struct V4Box {
  int64_t lo[3], n[3];
  bool staged;
};

template <bool kAdjoint>
RS_HD V4Box v4_box(const Geometry& g, const V4Tile& tile, const V4Shared& sh) {
  const int64_t* ext = kAdjoint ? g.out : g.in;
  const int64_t d_lo[3] = {tile.p0, tile.h0, tile.w0};
  const int64_t d_hi[3] = {tile.p0, tile.h1 - 1, tile.w1 - 1};
  V4Box box;
  box.staged = tile.w1 > tile.w0;
  int64_t positions = 1;
  for (int a = 0; a < 3; ++a) {
    const int64_t q_lo = RS_SHARED_LOAD(&sh.q_range[0][a]);
    const int64_t q_hi = RS_SHARED_LOAD(&sh.q_range[1][a]);
    box.staged = box.staged && q_lo <= q_hi;
    // Source indices destination indices [d_lo, d_hi] read, corners included: forward
    // o * s - pad + q + k; adjoint every o with o * s in [i + pad - q - 1, i + pad - q].
    int64_t lo, hi;
    if constexpr (kAdjoint) {
      lo = floor_div<int64_t>(d_lo[a] + g.pad[a] - q_hi - 1, g.stride[a]);
      hi = floor_div<int64_t>(d_hi[a] + g.pad[a] - q_lo, g.stride[a]);
    } else {
      lo = d_lo[a] * g.stride[a] - g.pad[a] + q_lo;
      hi = d_hi[a] * g.stride[a] - g.pad[a] + q_hi + 1;
    }
    box.lo[a] = clamp_index(lo, ext[a]);
    box.n[a] = clamp_index(hi, ext[a]) - box.lo[a] + 1;
    positions *= box.staged ? box.n[a] : 1;  // each n <= ext: no overflow before the test
    box.staged = box.staged && positions <= kV4StagePositions;
  }
  return box;
}

// Phase 3: the block loads its box, warp k the positions k, k + 8, ... (all the tile's channels of
// one source position per load), kV4StageBatch positions at a time: their loads are all issued
// before the first store to shared memory waits for one. A cursor walks the box (no division per
// position).
template <DType D, bool kAdjoint, typename I>
RS_HD void v4_stage_phase(const typename Storage<D>::T* __restrict__ src, const Geometry& g,
                          const V4Tile& tile, int thread, V4Shared& sh) {
  using T = typename Storage<D>::T;
  const V4Box box = v4_box<kAdjoint>(g, tile, sh);
  const int lane = thread % kV4Channels;
  const int64_t c = tile.c0 + lane;
  if (!box.staged || c >= g.c) return;
  const int64_t* ext = kAdjoint ? g.out : g.in;
  I positions = static_cast<I>(box.n[0] * box.n[1] * box.n[2]);
#if defined(RUBIKS_V4_SHORT_STAGE)
  positions -= static_cast<I>(box.n[2]);  // a deliberate bug for the tests: one w row short
#endif
  const I nw = static_cast<I>(box.n[2]), nh = static_cast<I>(box.n[1]);
  const I C = static_cast<I>(g.c);
  float* stage = &sh.stage[0][lane];
  // Cursor: position pos = (it * nh + ih) * nw + iw, advanced by kV4Warps.
  I iw = static_cast<I>(thread / kV4Channels), ih = 0, it = 0;
  auto row_of = [&]() {
    while (iw >= nw) iw -= nw, ++ih;
    while (ih >= nh) ih -= nh, ++it;
    return static_cast<I>(offset(g, tile.n, box.lo[0] + it, box.lo[1] + ih, box.lo[2], ext) + c);
  };
  I row = row_of();
  RS_TRACE_SCOPE();
  for (I pos = static_cast<I>(thread / kV4Channels); pos < positions;
       pos += kV4Warps * kV4StageBatch) {
    T v[kV4StageBatch];
#pragma unroll
    for (int b = 0; b < kV4StageBatch; ++b) {
      if (pos + b * kV4Warps < positions) v[b] = RS_LOAD(src + (row + iw * C));
      iw += kV4Warps;
      if (iw >= nw) row = row_of();
    }
#pragma unroll
    for (int b = 0; b < kV4StageBatch; ++b)
      if (pos + b * kV4Warps < positions)
        RS_SHARED_STORE(stage + (pos + b * kV4Warps) * kV4Channels, Storage<D>::load(v[b]));
    RS_TRACE_POINT();
  }
}

// Phase 4: warps share the tile's destination rows (kV4Warps / kV4Rows warps a row, each a part of
// its points), lane = channel: walk_row over the stage, or over the source where the box does not
// fit.
template <DType D, bool kAdjoint, bool kUnitW, typename I>
RS_HD void v4_interpolate_phase(const typename Storage<D>::T* __restrict__ src,
                                typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                                const V4Tile& tile, int thread, const V4Shared& sh) {
  constexpr int kWarpsPerRow = kV4Warps / kV4Rows;
  static_assert(kWarpsPerRow * kV4Rows == kV4Warps, "a tile's rows share the warps evenly");
  const int lane = thread % kV4Channels, warp = thread / kV4Channels;
  const int64_t c = tile.c0 + lane, p1 = tile.h0 + warp / kWarpsPerRow;
  if (c >= g.c || p1 >= tile.h1) return;
  const int64_t per_warp = (tile.w1 - tile.w0 + kWarpsPerRow - 1) / kWarpsPerRow;
  const int64_t begin = tile.w0 + (warp % kWarpsPerRow) * per_warp;
  const int64_t end = begin + per_warp < tile.w1 ? begin + per_warp : tile.w1;
  if (begin >= end) return;
  const int64_t* ext = kAdjoint ? g.in : g.out;
  typename Storage<D>::T* row_dst =
      dst + static_cast<I>(offset(g, tile.n, tile.p0, p1, 0, ext) + c);
  const ChannelShift cs = v4_channel_shift(sh, lane);
  const V4Box box = v4_box<kAdjoint>(g, tile, sh);
  if (!box.staged || !cs.finite) {
    interpolate_row<D, kAdjoint, kUnitW, I>(src, row_dst, g, cs, tile.n, tile.p0, p1, c, begin,
                                            end);
    return;
  }
  // The row's taps over the source, then its four (t, h) rows moved to the stage: the stage is a
  // tensor of kV4Channels channels whose w index is the source's minus box.lo[2]. An absent tap's
  // clamped row may lie outside the box: any row inside will do (its terms are dropped).
  const I nw = static_cast<I>(box.n[2]), nh = static_cast<I>(box.n[1]);
  const RowSetup<I> r = row_setup_from<I>(
      row_taps<kAdjoint, /*kWeighted=*/true>(g, cs, tile.p0, p1), [&](int64_t t, int64_t h) {
        const I st = static_cast<I>(clamp_index(t - box.lo[0], box.n[0]));
        const I sh_ = static_cast<I>(clamp_index(h - box.lo[1], box.n[1]));
        return ((st * nh + sh_) * nw - static_cast<I>(box.lo[2])) * kV4Channels + lane;
      });
  Geometry gs = g;
  gs.c = kV4Channels;
  const I C = static_cast<I>(g.c);
  // The stage holds f32: walk it as an f32 tensor (the values are the source's, converted exactly).
  walk_row<DType::kF32, I, kAdjoint, kUnitW, /*kMayCarry=*/true, /*kShared=*/true>(
      &sh.stage[0][0], gs, cs, r, begin, end,
      [&]<bool kAllOn, typename Corners>(I p, const Corners& corner, const bool(&w_on)[2]) {
        RS_STORE(row_dst + p * C, Storage<D>::store(interpolate_point<I, kAllOn>(r, corner, w_on)));
      });
}

// One v4 block on the host (the CUDA kernels' emulation and the memory trace): the four phases in
// barrier order, every thread of one before the next, with the shared memory first filled with all
// ones (NaN in the stage) so that a read of anything not staged shows. before_thread(t) runs before
// each thread's part of each phase (the memory trace switches its recorder there).
template <DType D, bool kAdjoint, bool kUnitW, typename I, typename BeforeThread>
void run_v4_block_on_host(const typename Storage<D>::T* src, const float* shift,
                          typename Storage<D>::T* dst, const Geometry& g, bool quantize,
                          const V4Plan& plan, int64_t block, V4Shared& shared,
                          BeforeThread&& before_thread) {
  std::memset(&shared, 0xff, sizeof(shared));
  const V4Tile tile = v4_tile(g, kAdjoint, plan, block);
  for (int t = 0; t < kThreads; ++t) {
    before_thread(t);
    v4_shift_phase(shift, g, quantize, tile, t, shared);
  }
  for (int t = 0; t < kThreads; ++t) {
    before_thread(t);
    v4_range_phase(t, shared);
  }
  for (int t = 0; t < kThreads; ++t) {
    before_thread(t);
    v4_stage_phase<D, kAdjoint, I>(src, g, tile, t, shared);
  }
  for (int t = 0; t < kThreads; ++t) {
    before_thread(t);
    v4_interpolate_phase<D, kAdjoint, kUnitW, I>(src, dst, g, tile, t, shared);
  }
}

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_V4_H_
