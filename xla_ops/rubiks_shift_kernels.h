// Bodies of the CUDA kernels: which thread computes which points, and the shift gradient's block
// reduction. Written as host/device functions of (block, thread) so that rubiks_shift_cuda.cu wraps
// them in __global__ kernels and cuda_emulation.cc runs the very same code on the host over the same
// grid (the test suite compares that emulation with the CPU kernels bit for bit). The arithmetic
// itself is the row functions of rubiks_shift_math.h, shared with the CPU kernels.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_H_

#include <cstdint>

#include "rubiks_shift_math.h"

namespace rubiks {

// Threads per block of the interpolation kernels and of the shift gradient's pass 1.
constexpr int kThreads = 256;
// Most destination points one interpolation thread walks: long enough to amortise its set-up
// (index split, channel shift, row taps), short enough to give the GPU several waves of threads.
constexpr int64_t kSegmentTarget = 32;
// Shift-gradient pass 2: a block reduces kReduceTile entries of dshift, each with kReduceLanes lanes.
constexpr int kReduceTile = 8;

// ---------------------------------------------------------------------------------------------
// Forward (y from x) and input gradient (kAdjoint: dx from dy): one thread per destination
// (row, w segment, channel), channel fastest, so a warp's loads and stores are consecutive
// channels of one point (coalesced); each thread walks its segment along w.
// ---------------------------------------------------------------------------------------------
struct InterpolationPlan {
  int64_t width;     // destination W
  int64_t segments;  // w segments per destination row
  int64_t seg_len;   // points per segment (the last may be shorter)
  int64_t items;     // rows * segments * C threads
  int64_t blocks;    // of kThreads threads
};

inline InterpolationPlan plan_interpolation(const Geometry& g, bool adjoint) {
  const int64_t* ext = adjoint ? g.in : g.out;
  InterpolationPlan p;
  p.width = ext[2];
  p.segments = p.width == 0 ? 1 : (p.width + kSegmentTarget - 1) / kSegmentTarget;
  p.seg_len = p.width == 0 ? 0 : (p.width + p.segments - 1) / p.segments;
  p.items = g.n * ext[0] * ext[1] * p.segments * g.c;
  p.blocks = (p.items + kThreads - 1) / kThreads;
  return p;
}

template <DType D, bool kAdjoint, bool kUnitW, typename I, bool kMayCarry = true>
RS_HD void interpolate_thread(const typename Storage<D>::T* __restrict__ src,
                              const float* __restrict__ shift,
                              typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                              bool quantize, const InterpolationPlan& plan, int64_t block,
                              int thread) {
  const int64_t item64 = block * kThreads + thread;
  if (item64 >= plan.items) return;
  const int64_t* ext = kAdjoint ? g.in : g.out;
  // 32-bit divisions where the tensor allows (I = int32_t); once per thread, not per point.
  const I item = static_cast<I>(item64), C = static_cast<I>(g.c);
  const I c = item % C, rest = item / C;
  const I segments = static_cast<I>(plan.segments);
  const I seg = rest % segments, row = rest / segments;
  const I e0 = static_cast<I>(ext[0]), e1 = static_cast<I>(ext[1]);
  const I p1 = row % e1, p0 = (row / e1) % e0, n = row / (e0 * e1);
  const I begin = seg * static_cast<I>(plan.seg_len);
  const I end = begin + static_cast<I>(plan.seg_len) < static_cast<I>(plan.width)
                    ? begin + static_cast<I>(plan.seg_len)
                    : static_cast<I>(plan.width);
  const ChannelShift cs = channel_shift(shift + 3 * c, quantize);
  interpolate_row<D, kAdjoint, kUnitW, I, kMayCarry>(
      src, dst + row * static_cast<I>(plan.width) * C + c, g, cs, n, p0, p1, c, begin, end);
}

// Calls fn.template operator()<kUnitW, I>() with the variant of the interpolation kernels that
// fits g: unit w stride or not, 32-bit offsets or 64-bit (force_64bit: always 64-bit, for tests).
template <typename Fn>
auto with_interpolation_variant(const Geometry& g, bool force_64bit, Fn&& fn) {
  const bool unit_w = g.stride[2] == 1, narrow = !force_64bit && fits_32bit(g);
  if (unit_w) {
    return narrow ? fn.template operator()<true, int32_t>()
                  : fn.template operator()<true, int64_t>();
  }
  return narrow ? fn.template operator()<false, int32_t>()
                : fn.template operator()<false, int64_t>();
}

// ---------------------------------------------------------------------------------------------
// Shift gradient, pass 1: one thread per (chunk, channel), channel fastest; the thread sums its
// chunk's points in order (shift_grad_points) and writes partials[p, c, :]. No shared memory and no
// atomics: the sum's order is fixed by the chunking alone.
// ---------------------------------------------------------------------------------------------
inline int64_t partials_blocks(const Geometry& g, int64_t chunks) {
  return (chunks * g.c + kThreads - 1) / kThreads;
}

template <DType D, typename I>
RS_HD void shift_grad_partials_thread(const typename Storage<D>::T* __restrict__ x,
                                      const typename Storage<D>::T* __restrict__ dy,
                                      const float* __restrict__ shift,
                                      float* __restrict__ partials, const Geometry& g,
                                      int64_t chunks, int64_t block, int thread) {
  const int64_t item = block * kThreads + thread;
  if (item >= chunks * g.c) return;
  const int64_t c = item % g.c, p = item / g.c;
  const int64_t points = g.n * g.out[0] * g.out[1] * g.out[2];
  const ChannelShift cs = channel_shift(shift + 3 * c, /*quantize=*/false);
  float acc[3] = {0.f, 0.f, 0.f};
  shift_grad_points<D, I>(x, dy, g, cs, chunk_begin(points, chunks, p),
                          chunk_begin(points, chunks, p + 1), c, acc);
  for (int a = 0; a < 3; ++a) RS_STORE(partials + ((p * g.c + c) * 3 + a), acc[a]);
}

template <typename Fn>
auto with_index_type(const Geometry& g, bool force_64bit, Fn&& fn) {
  return (!force_64bit && fits_32bit(g)) ? fn.template operator()<int32_t>()
                                         : fn.template operator()<int64_t>();
}

// ---------------------------------------------------------------------------------------------
// Shift gradient, pass 2: block b reduces entries i = b * kReduceTile + tx of dshift (i = 3c + a)
// with threads (tx, lane): each lane sums its interleaved chunks (reduce_lane_sum) into shared
// memory, then a tree of fixed shape adds the lanes, one barrier per level, and lane 0 stores.
// ---------------------------------------------------------------------------------------------
inline int64_t reduce_blocks(int64_t c3) { return (c3 + kReduceTile - 1) / kReduceTile; }

using ReduceShared = float[kReduceLanes][kReduceTile];

RS_HD void reduce_load_phase(const float* __restrict__ partials, ReduceShared& sums,
                             int64_t chunks, int64_t c3, int64_t block, int tx, int lane) {
  const int64_t i = block * kReduceTile + tx;
  sums[lane][tx] = i < c3 ? reduce_lane_sum(partials, chunks, c3, i, lane) : 0.f;
}

RS_HD void reduce_tree_phase(ReduceShared& sums, int half, int tx, int lane) {
  reduce_tree_step(&sums[0][tx], lane, half, kReduceTile);
}

RS_HD void reduce_store_phase(const ReduceShared& sums, float* __restrict__ dshift, int64_t c3,
                              int64_t block, int tx, int lane) {
  const int64_t i = block * kReduceTile + tx;
  if (lane == 0 && i < c3) dshift[i] = sums[0][tx];
}

// Pass 2 on the host: the phases above over every block, in barrier order. The CPU kernels finish
// the shift gradient with it, so their result has the GPU's bits.
inline void reduce_partials_on_host(const float* partials, float* dshift, int64_t chunks,
                                    int64_t c3) {
  ReduceShared sums;
  for (int64_t b = 0; b < reduce_blocks(c3); ++b) {
    for (int lane = 0; lane < kReduceLanes; ++lane)
      for (int tx = 0; tx < kReduceTile; ++tx)
        reduce_load_phase(partials, sums, chunks, c3, b, tx, lane);
    for (int half = kReduceLanes / 2; half > 0; half /= 2)
      for (int lane = 0; lane < kReduceLanes; ++lane)
        for (int tx = 0; tx < kReduceTile; ++tx) reduce_tree_phase(sums, half, tx, lane);
    for (int lane = 0; lane < kReduceLanes; ++lane)
      for (int tx = 0; tx < kReduceTile; ++tx) reduce_store_phase(sums, dshift, c3, b, tx, lane);
  }
}

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_KERNELS_H_
