// Host/device math of the RubiksShift op, shared by the CPU (.cc) and CUDA (.cu) kernels so that the
// CPU tests exercise the same arithmetic the GPU runs.
//
// Layout: x is (N, T, H, W, C) channels-last, shift is (C, 3) float32 with columns (dt, dh, dw).
// Output index o on an axis of stride s and padding p samples the input at o*s - p + d. Because d is
// per channel, floor(o*s - p + d) = o*s - p + floor(d): each channel has one integer offset q and
// one fraction r for the whole tensor, and trilinear interpolation reads the corners q and q + 1 with
// weights (1 - r, r). Corners outside the input contribute 0.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MATH_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MATH_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define RS_HD __host__ __device__ __forceinline__
#else
#define RS_HD inline
#endif

// Every global-memory access of the kernels' thread bodies goes through RS_LOAD / RS_STORE, and the
// loops that issue them are marked: RS_TRACE_SCOPE opens a loop body's scope, RS_TRACE_POINT ends
// one point of it. In the kernels these are plain accesses and nothing. Built with
// RUBIKS_MEMORY_TRACE (host only: tools/memory_trace.cc, the memory model of the CUDA kernels) they
// record each access's static site and address, which is how the model lines up a warp's lanes.
#if defined(RUBIKS_MEMORY_TRACE) && !defined(__CUDACC__)
namespace rubiks::trace {
void access(const void* site, const void* address, int bytes, bool store, bool shared);
void enter(const void* scope);
void leave();
void point();
struct Scope {
  explicit Scope(const void* site) { enter(site); }
  ~Scope() { leave(); }
};
template <typename T>
T load(const void* site, const T* p, bool shared) {
  access(site, p, sizeof(T), false, shared);
  return *p;
}
template <typename T, typename V>
void store(const void* site, T* p, V v, bool shared) {
  access(site, p, sizeof(T), true, shared);
  *p = v;
}
}  // namespace rubiks::trace
// A distinct address per expansion and per template instantiation of the enclosing function.
#define RS_TRACE_SITE ([] { static const char site = 0; return static_cast<const void*>(&site); }())
#define RS_LOAD(p) (::rubiks::trace::load(RS_TRACE_SITE, (p), false))
#define RS_STORE(p, v) (::rubiks::trace::store(RS_TRACE_SITE, (p), (v), false))
#define RS_SHARED_LOAD(p) (::rubiks::trace::load(RS_TRACE_SITE, (p), true))
#define RS_SHARED_STORE(p, v) (::rubiks::trace::store(RS_TRACE_SITE, (p), (v), true))
#define RS_TRACE_SCOPE() ::rubiks::trace::Scope rs_trace_scope_(RS_TRACE_SITE)
#define RS_TRACE_POINT() ::rubiks::trace::point()
#else
#define RS_LOAD(p) (*(p))
#define RS_STORE(p, v) (*(p) = (v))
#define RS_SHARED_LOAD(p) (*(p))
#define RS_SHARED_STORE(p, v) (*(p) = (v))
#define RS_TRACE_SCOPE() static_cast<void>(0)
#define RS_TRACE_POINT() static_cast<void>(0)
#endif
// A source element read from global memory, or from a stage in shared memory where kShared.
#define RS_SOURCE_LOAD(kShared, p) ((kShared) ? RS_SHARED_LOAD(p) : RS_LOAD(p))

namespace rubiks {

#if !defined(__CUDA_ARCH__)
using std::floor;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::rintf;
#endif

// Shifts beyond +-2^30 leave every corner outside any tensor this op can address along one axis;
// clamping them keeps the integer arithmetic below in range (no overflow, no out-of-bounds read).
constexpr double kMaxAbsShift = 1073741824.0;

// ---------------------------------------------------------------------------------------------
// Storage types. Every kernel loads through `load` and stores through `store`; arithmetic is f32.
// ---------------------------------------------------------------------------------------------
RS_HD float bits_to_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

RS_HD uint32_t f32_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

// bfloat16 / float16 conversions. On the GPU they are the hardware conversions (one instruction
// each); on the host, bit manipulation with the same rounding (to nearest even, overflow to
// infinity, subnormals kept). The two differ only in the payload of a NaN.
#if defined(__CUDA_ARCH__)
RS_HD float bf16_to_f32(uint16_t h) { return __bfloat162float(__ushort_as_bfloat16(h)); }
RS_HD uint16_t f32_to_bf16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
RS_HD float f16_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
RS_HD uint16_t f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
#else
RS_HD float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// NaN stays a (quiet) NaN.
RS_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

RS_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in f32
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_to_f32(sign | 0x7f800000u | (mantissa << 13));
  return bits_to_f32(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

RS_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (u < 0x38800000u) {                         // below 2^-14: subnormal half
    // |f| * 2^24 < 2^10 is exact; rint rounds half to even. 1024 is the smallest normal, as encoded.
    return sign | static_cast<uint16_t>(rintf(bits_to_f32(u) * 16777216.0f));
  }
  u += 0xfffu + ((u >> 13) & 1u);
  u -= 112u << 23;
  return sign | static_cast<uint16_t>(u >> 13);
}
#endif

enum class DType { kF32, kBF16, kF16 };

template <DType D>
struct Storage;

template <>
struct Storage<DType::kF32> {
  using T = float;
  static RS_HD float load(T v) { return v; }
  static RS_HD T store(float f) { return f; }
};

template <>
struct Storage<DType::kBF16> {
  using T = uint16_t;
  static RS_HD float load(T v) { return bf16_to_f32(v); }
  static RS_HD T store(float f) { return f32_to_bf16(f); }
};

template <>
struct Storage<DType::kF16> {
  using T = uint16_t;
  static RS_HD float load(T v) { return f16_to_f32(v); }
  static RS_HD T store(float f) { return f32_to_f16(f); }
};

// ---------------------------------------------------------------------------------------------
// Geometry and per-channel shift.
// ---------------------------------------------------------------------------------------------
struct Geometry {
  int64_t n;         // batch (all leading axes merged)
  int64_t in[3];     // T, H, W of x
  int64_t out[3];    // To, Ho, Wo of y
  int64_t c;         // channels
  int64_t stride[3];
  int64_t pad[3];
};

RS_HD int64_t out_extent(int64_t in, int64_t stride, int64_t pad) {
  return (in + 2 * pad - 1) / stride + 1;
}

struct ChannelShift {
  int64_t q[3];  // floor of the (quantized) shift per axis
  float r[3];    // fraction in [0, 1) per axis
  bool finite;   // false if any component is NaN or infinite: the channel's outputs become NaN
};

// `quantize` replaces d by floor(d + 0.5) (computed in double, so 0.49999997f stays 0).
RS_HD ChannelShift channel_shift(const float* shift3, bool quantize) {
  ChannelShift cs;
  cs.finite = true;
  for (int a = 0; a < 3; ++a) {
    double d = static_cast<double>(RS_LOAD(shift3 + a));
    if (!isfinite(d)) {
      cs.finite = false;
      cs.q[a] = 0;
      cs.r[a] = 0.f;
      continue;
    }
    if (quantize) d = floor(d + 0.5);
    d = fmin(fmax(d, -kMaxAbsShift), kMaxAbsShift);
    const double f = floor(d);
    cs.q[a] = static_cast<int64_t>(f);
    // d - f is exact in double; rounding it to float can give 1.0f for a tiny negative d (weight
    // moves wholly to corner q + 1 = 0): the interpolated value stays right.
    cs.r[a] = static_cast<float>(d - f);
  }
  return cs;
}

// Weight of corner k in {0, 1} at fraction r (its derivative with respect to the shift is -1, +1).
RS_HD float corner_weight(float r, int k) { return k ? r : 1.f - r; }

// Floor of a / b for b > 0 and any sign of a.
template <typename I>
RS_HD I floor_div(I a, I b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Input index of output index `o` on axis a for corner k (forward), and whether it lies inside.
RS_HD int64_t forward_index(const Geometry& g, const ChannelShift& cs, int a, int64_t o, int k) {
  return o * g.stride[a] - g.pad[a] + cs.q[a] + k;
}
RS_HD bool forward_inside(const Geometry& g, int a, int64_t i) { return i >= 0 && i < g.in[a]; }

// Output index whose corner k reads input index `i` on axis a (adjoint), or -1 if none does.
RS_HD int64_t adjoint_tap(const Geometry& g, const ChannelShift& cs, int a, int64_t i, int k) {
  const int64_t num = i + g.pad[a] - cs.q[a] - k;
  if (num < 0) return -1;
  const int64_t s = g.stride[a];
  const int64_t o = num / s;
  return (o * s == num && o < g.out[a]) ? o : -1;
}

RS_HD int64_t offset(const Geometry& g, int64_t n, int64_t t, int64_t h, int64_t w,
                     const int64_t* extent) {
  return (((n * extent[0] + t) * extent[1] + h) * extent[2] + w) * g.c;
}

RS_HD int64_t clamp_index(int64_t i, int64_t extent) {
  return i < 0 ? 0 : (i >= extent ? extent - 1 : i);
}

// ---------------------------------------------------------------------------------------------
// Row-wise kernels, shared by the CPU and CUDA kernels (and the CUDA kernels' host emulation).
//
// A row is one (n, p0, p1) line of destination points along w. For one channel, the t and h
// corners, their weights and the four source rows are the same along the whole row: they are set
// up once (RowSetup) and a cursor walks w. Every corner is loaded from a valid address (absent
// corners read a clamped in-range element) and its term is then kept or dropped by a select, so a
// GPU thread issues all 8 loads at once instead of one per branch. Dropping a term leaves the
// accumulator untouched, exactly as skipping it would: an absent corner or one of weight 0 never
// adds 0 * inf = NaN or turns -0 into +0, and the results are the same bits on every platform
// that rounds each float operation separately (no FMA contraction: the builds pass
// -ffp-contract=off to the host compiler and -fmad=false to nvcc).
//
// I is the offset type: int32_t when every tensor has fewer than 2^31 elements and every axis'
// index arithmetic fits (fits_32bit below), else int64_t.
// ---------------------------------------------------------------------------------------------

// Shift along w saturated so that w index arithmetic stays within a few extents of 0: a shift
// past every input (forward) or output (adjoint) column leaves every corner absent, saturated or not.
RS_HD int64_t saturated_q(const Geometry& g, const ChannelShift& cs, int a) {
  const int64_t lo = -(g.out[a] * g.stride[a] + g.pad[a] + 2), hi = g.in[a] + g.pad[a] + 2;
  return cs.q[a] < lo ? lo : (cs.q[a] > hi ? hi : cs.q[a]);
}

// True when the 32-bit kernels may be used: tensors below 2^31 elements and every index along any
// axis (with the saturated shift) far from the int32 limits.
RS_HD bool fits_32bit(const Geometry& g) {
  const int64_t limit = int64_t{1} << 31;
  int64_t in_elems = g.n * g.c, out_elems = g.n * g.c;
  for (int a = 0; a < 3; ++a) {
    in_elems *= g.in[a];
    out_elems *= g.out[a];
    if (4 * (g.in[a] + g.out[a] * g.stride[a] + 2 * g.pad[a] + 4) >= limit) return false;
  }
  return g.n >= 0 && in_elems < limit && out_elems < limit;
}

// The t and h corners of destination row (n, p0, p1) for one channel: the source frame and row of
// each corner (clamped into the source; a valid index where absent), whether it is present, and
// the weights of all three axes. kAdjoint: the destination is dx and the source dy (input
// gradient); otherwise y from x (forward). kWeighted: corners of weight 0 are absent
// (interpolation); the shift gradient keeps them (their derivative weight is +-1).
struct RowTaps {
  int64_t t[2], h[2];  // source frame of t corner i, source row of h corner j
  bool t_on[2];        // t corner i present
  bool h_on[2];        // h corner j present
  bool w_use[2];       // w corner k may be present (interpolation: weight nonzero)
  float wt[2], wh[2], ww[2];
};

template <bool kAdjoint, bool kWeighted>
RS_HD RowTaps row_taps(const Geometry& g, const ChannelShift& cs, int64_t p0, int64_t p1) {
  RowTaps r;
  const int64_t* src_extent = kAdjoint ? g.out : g.in;
  for (int k = 0; k < 2; ++k) {
    r.wt[k] = corner_weight(cs.r[0], k);
    r.wh[k] = corner_weight(cs.r[1], k);
    r.ww[k] = corner_weight(cs.r[2], k);
    int64_t it, ih;
    if constexpr (kAdjoint) {
      it = adjoint_tap(g, cs, 0, p0, k);
      ih = adjoint_tap(g, cs, 1, p1, k);
      r.t_on[k] = it >= 0;
      r.h_on[k] = ih >= 0;
    } else {
      it = forward_index(g, cs, 0, p0, k);
      ih = forward_index(g, cs, 1, p1, k);
      r.t_on[k] = forward_inside(g, 0, it);
      r.h_on[k] = forward_inside(g, 1, ih);
    }
    if (kWeighted) {
      r.t_on[k] = r.t_on[k] && r.wt[k] != 0.f;
      r.h_on[k] = r.h_on[k] && r.wh[k] != 0.f;
      r.w_use[k] = r.ww[k] != 0.f;
    } else {
      r.w_use[k] = true;
    }
    r.t[k] = clamp_index(it, src_extent[0]);
    r.h[k] = clamp_index(ih, src_extent[1]);
  }
  return r;
}

template <typename I>
struct RowSetup {
  I src[2][2];      // element offset of source (n, t_i, h_j, w = 0, c); a valid row where absent
  bool t_on[2];     // t corner i present
  bool h_on[2];     // h corner j present
  bool w_use[2];    // w corner k may be present (interpolation: weight nonzero)
  float wt[2], wh[2], ww[2];
};

// A row's setup from its taps, with row_offset(t, h) the offset of source row (t, h) at w = 0.
template <typename I, typename RowOffset>
RS_HD RowSetup<I> row_setup_from(const RowTaps& taps, RowOffset&& row_offset) {
  RowSetup<I> r;
  for (int k = 0; k < 2; ++k) {
    r.t_on[k] = taps.t_on[k];
    r.h_on[k] = taps.h_on[k];
    r.w_use[k] = taps.w_use[k];
    r.wt[k] = taps.wt[k];
    r.wh[k] = taps.wh[k];
    r.ww[k] = taps.ww[k];
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) r.src[i][j] = row_offset(taps.t[i], taps.h[j]);
  return r;
}

// Setup of destination row (n, p0, p1), channel c: row_taps with the source offsets of its four
// (t, h) rows.
template <typename I, bool kAdjoint, bool kWeighted>
RS_HD RowSetup<I> row_setup(const Geometry& g, const ChannelShift& cs, int64_t n, int64_t p0,
                            int64_t p1, int64_t c) {
  const int64_t* src_extent = kAdjoint ? g.out : g.in;
  return row_setup_from<I>(row_taps<kAdjoint, kWeighted>(g, cs, p0, p1), [&](int64_t t, int64_t h) {
    return static_cast<I>(offset(g, n, t, h, 0, src_extent) + c);
  });
}

// Cursor over the w corners of consecutive destination points of a row. At each point it gives,
// per corner k, the element offset (times C) of the source column, clamped to the row, and whether
// the corner is present.
// Forward: corner k of output column o reads input column o * sw - pad + q + k.
// Adjoint (input gradient): corner k of output column o reads input column p when
// p + pad - q - k = o * sw, so the cursor tracks o and the remainder for each corner; moving to
// p + 1 adds 1 to the remainder and carries into o, so no division per point. kUnitW: sw == 1.
template <typename I, bool kAdjoint, bool kUnitW>
struct WCursor {
  I idx[2];      // source column of corner k (forward), or output column o_k (adjoint)
  I rem[2];      // adjoint only: (p + pad - q - k) - o_k * sw, in [0, sw)
  I step, stride, extent, c;
  bool use[2];

  RS_HD WCursor(const Geometry& g, const ChannelShift& cs, const bool (&w_use)[2], int64_t p) {
    const int64_t q = saturated_q(g, cs, 2), sw = kUnitW ? 1 : g.stride[2];
    stride = static_cast<I>(sw);
    c = static_cast<I>(g.c);
    for (int k = 0; k < 2; ++k) {
      use[k] = w_use[k];
      if constexpr (kAdjoint) {
        const int64_t num = p + g.pad[2] - q - k;
        const int64_t o = floor_div<int64_t>(num, sw);
        idx[k] = static_cast<I>(o);
        rem[k] = static_cast<I>(num - o * sw);
      } else {
        idx[k] = static_cast<I>(p * sw - g.pad[2] + q + k);
        rem[k] = 0;
      }
    }
    extent = static_cast<I>(kAdjoint ? g.out[2] : g.in[2]);
    step = static_cast<I>(kAdjoint ? 1 : sw);
  }

  RS_HD bool on(int k) const {
    const bool inside = idx[k] >= 0 && idx[k] < extent;
    if constexpr (kAdjoint && !kUnitW) return use[k] && inside && rem[k] == 0;
    return use[k] && inside;
  }

  RS_HD I offset(int k) const {
    const I i = idx[k] < 0 ? I{0} : (idx[k] >= extent ? extent - 1 : idx[k]);
    return i * c;
  }

  RS_HD void advance() {
    for (int k = 0; k < 2; ++k) {
      if constexpr (kAdjoint && !kUnitW) {
        const I r = rem[k] + 1;
        const bool carry = r == stride;
        rem[k] = carry ? I{0} : r;
        idx[k] += carry ? I{1} : I{0};
      } else {
        idx[k] += step;
      }
    }
  }
};

// Interior [lo, hi) of destination points whose two w corners are both present, clipped to
// [begin, end): there the source offset of corner 0 starts at `first` and advances by `step`, and
// corner 1 sits `next` elements from it, so a point needs no cursor, clamp or select along w.
// Forward: corner 0 of output o is input o * sw - pad + q, corner 1 the next column. Adjoint at unit
// w stride: corner 0 of input p is output p + pad - q, corner 1 the one before it. (At other
// strides each corner hits only every sw-th input column: no interior, the cursor walks the row.)
template <typename I>
struct WInterior {
  I lo, hi, first, step, next;
};

template <typename I, bool kAdjoint, bool kUnitW>
RS_HD WInterior<I> w_interior(const Geometry& g, const ChannelShift& cs, const bool (&w_use)[2],
                              int64_t begin, int64_t end) {
  int64_t lo = end, hi = end, first = 0, step = 0, next = 0;
  const int64_t q = saturated_q(g, cs, 2), pad = g.pad[2], sw = kUnitW ? 1 : g.stride[2];
  if (w_use[0] && w_use[1]) {
    if constexpr (!kAdjoint) {
      lo = -floor_div<int64_t>(q - pad, sw);  // ceil((pad - q) / sw)
      hi = floor_div<int64_t>(g.in[2] - 2 + pad - q, sw) + 1;
      step = sw * g.c, next = g.c;
    } else if constexpr (kUnitW) {
      lo = q - pad + 1;
      hi = g.out[2] + q - pad;
      step = g.c, next = -g.c;
    }
  }
  lo = lo < begin ? begin : (lo > end ? end : lo);
  hi = hi < lo ? lo : (hi > end ? end : hi);
  if (hi > lo) first = (kAdjoint ? lo + pad - q : lo * sw - pad + q) * g.c;
  return {static_cast<I>(lo), static_cast<I>(hi), static_cast<I>(first), static_cast<I>(step),
          static_cast<I>(next)};
}

// A point's 8 corner values, read as corner(i, j, k) for t corner i, h corner j, w corner k
// (absent corners read a clamped, valid element; the point function selects them away).
// SourceCorners loads each where the point function reads it (from global memory, or from a stage
// in shared memory where kShared: CUDA v4); HeldCorners hands out values already in registers (the
// carried interior below).
template <DType D, typename I, bool kShared>
struct SourceCorners {
  const typename Storage<D>::T* __restrict__ src;
  const RowSetup<I>& r;
  I w_off[2];
  RS_HD float operator()(int i, int j, int k) const {
    return Storage<D>::load(RS_SOURCE_LOAD(kShared, src + (r.src[i][j] + w_off[k])));
  }
};

struct HeldCorners {
  const float (&v)[2][2][2];
  RS_HD float operator()(int i, int j, int k) const { return v[i][j][k]; }
};

// Calls point.template operator()<kAllOn>(p, corner, w_on) for p in [begin, end) in increasing
// order, corner the point's corner values in src (SourceCorners or HeldCorners): the edges through
// the cursor, the interior with constant steps. kAllOn: all 8 corners are present (interior point
// of a row whose t and h corners are all present), so the point function compiles without its
// selects. kMayCarry: the interior may carry shared corners from point to point (below). kShared:
// src is a stage in shared memory laid out like a tensor (CUDA v4: g.c is then the stage's channel
// pitch and r.src its row offsets).
template <DType D, typename I, bool kAdjoint, bool kUnitW, bool kMayCarry, bool kShared = false,
          typename Point>
RS_HD void walk_row(const typename Storage<D>::T* __restrict__ src, const Geometry& g,
                    const ChannelShift& cs, const RowSetup<I>& r, int64_t begin, int64_t end,
                    Point&& point) {
  const WInterior<I> in = w_interior<I, kAdjoint, kUnitW>(g, cs, r.w_use, begin, end);
  auto edge = [&](I from, I to) {
    RS_TRACE_SCOPE();  // before the early return: a lane's leading and trailing edges stay apart
    if (from >= to) return;
    WCursor<I, kAdjoint, kUnitW> w(g, cs, r.w_use, from);
#pragma unroll 1
    for (I p = from; p < to; ++p) {
      const bool w_on[2] = {w.on(0), w.on(1)};
      point.template operator()<false>(
          p, SourceCorners<D, I, kShared>{src, r, {w.offset(0), w.offset(1)}}, w_on);
      RS_TRACE_POINT();
      w.advance();
    }
  };
  // At unit w stride neighbouring interior points share a source column: corner 1 of p is corner
  // 0 of p + 1 (forward), corner 0 of p is corner 1 of p + 1 (adjoint). The carried interior keeps
  // those four values in registers, so a point loads 4 values instead of 8; the values, hence the
  // bits, are the same. On an H200 (docs/KERNEL_NOTES.md, CUDA v3) it sped up the forward and the
  // input gradient but slowed the shift gradient's pass 1, so only the interpolation kernels carry
  // (kMayCarry). The dispatch below is written out in full: folding it into one lambda over kAllOn
  // cost three i32 kernels 8 registers (62% -> 50% occupancy, `bench sass`).
  auto interior = [&]<bool kAllOn>() {
    RS_TRACE_SCOPE();
    const bool w_on[2] = {true, true};
    I off = in.first;
#pragma unroll 1
    for (I p = in.lo; p < in.hi; ++p, off += in.step) {
      point.template operator()<kAllOn>(
          p, SourceCorners<D, I, kShared>{src, r, {off, off + in.next}}, w_on);
      RS_TRACE_POINT();
    }
  };
  constexpr int kFresh = kAdjoint ? 0 : 1;  // the w corner a carried point loads
  auto carried_interior = [&]<bool kAllOn>() {
    RS_TRACE_SCOPE();
    const bool w_on[2] = {true, true};
    I off = in.first;
    float v[2][2][2];
    if (in.lo < in.hi) {  // primes the carry: corner 1 - kFresh of the first point
      const I first = kFresh ? off : static_cast<I>(off + in.next);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          v[i][j][kFresh] = Storage<D>::load(RS_SOURCE_LOAD(kShared, src + (r.src[i][j] + first)));
    }
#pragma unroll 1
    for (I p = in.lo; p < in.hi; ++p, off += in.step) {
      const I fresh = kFresh ? static_cast<I>(off + in.next) : off;
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          v[i][j][1 - kFresh] = v[i][j][kFresh];
          v[i][j][kFresh] = Storage<D>::load(RS_SOURCE_LOAD(kShared, src + (r.src[i][j] + fresh)));
        }
      point.template operator()<kAllOn>(p, HeldCorners{v}, w_on);
      RS_TRACE_POINT();
    }
  };
  edge(static_cast<I>(begin), in.lo);
  const bool all_on = r.t_on[0] && r.t_on[1] && r.h_on[0] && r.h_on[1];
  // Forward interior: corner 0 advances by step = sw * C and corner 1 sits next = C after it;
  // adjoint interior (unit stride only): step = C, next = -C. Sharing needs |step| == C.
  bool carry = false;
  if constexpr (kMayCarry) carry = in.step == (kAdjoint ? -in.next : in.next);
  if (carry) {
    if constexpr (kMayCarry) {
      if (all_on)
        carried_interior.template operator()<true>();
      else
        carried_interior.template operator()<false>();
    }
  } else if (all_on) {
    interior.template operator()<true>();
  } else {
    interior.template operator()<false>();
  }
  edge(in.hi, static_cast<I>(end));
}

// One destination point from its corner values: the 8-corner weighted sum, accumulated in f32 in
// the order t, h, w.
template <typename I, bool kAllOn, typename Corners>
RS_HD float interpolate_point(const RowSetup<I>& r, const Corners& corner, const bool (&w_on)[2]) {
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float acc_t = 0.f;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float acc_h = 0.f;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const float sum = acc_h + r.ww[k] * corner(i, j, k);
        acc_h = (kAllOn || w_on[k]) ? sum : acc_h;
      }
      const float sum = acc_t + r.wh[j] * acc_h;
      acc_t = (kAllOn || r.h_on[j]) ? sum : acc_t;
    }
    const float sum = acc + r.wt[i] * acc_t;
    acc = (kAllOn || r.t_on[i]) ? sum : acc;
  }
  return acc;
}

// Destination points [begin, end) of row (n, p0, p1), channel c: y from x (forward) or dx from dy
// (kAdjoint). `dst` points at channel c of the destination row's w = 0. kMayCarry = false is the
// CUDA v2 walk (8 loads per interior point), kept for the memory model's calibration.
template <DType D, bool kAdjoint, bool kUnitW, typename I, bool kMayCarry = true>
RS_HD void interpolate_row(const typename Storage<D>::T* __restrict__ src,
                           typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                           const ChannelShift& cs, int64_t n, int64_t p0, int64_t p1, int64_t c,
                           int64_t begin, int64_t end) {
  const I C = static_cast<I>(g.c);
  if (!cs.finite) {
    for (I p = static_cast<I>(begin); p < static_cast<I>(end); ++p)
      RS_STORE(dst + p * C, Storage<D>::store(NAN));
    return;
  }
  const RowSetup<I> r = row_setup<I, kAdjoint, /*kWeighted=*/true>(g, cs, n, p0, p1, c);
  walk_row<D, I, kAdjoint, kUnitW, kMayCarry>(
      src, g, cs, r, begin, end,
      [&]<bool kAllOn, typename Corners>(I p, const Corners& corner, const bool(&w_on)[2]) {
        RS_STORE(dst + p * C, Storage<D>::store(interpolate_point<I, kAllOn>(r, corner, w_on)));
      });
}

// Adds the shift gradient of output points [begin, end) of row (n, ot, oh), channel c, to
// grad[0..2]: per point dy * d y / d shift, summed in increasing ow. cs must come from the
// unquantized shift (straight-through estimator for quantize=True).
template <DType D, typename I>
RS_HD void shift_grad_row(const typename Storage<D>::T* __restrict__ x,
                          const typename Storage<D>::T* __restrict__ dy, const Geometry& g,
                          const ChannelShift& cs, int64_t n, int64_t ot, int64_t oh, int64_t c,
                          int64_t begin, int64_t end, float (&grad)[3]) {
  if (!cs.finite) {
    if (end > begin) grad[0] = grad[1] = grad[2] = NAN;
    return;
  }
  const RowSetup<I> r = row_setup<I, /*kAdjoint=*/false, /*kWeighted=*/false>(g, cs, n, ot, oh, c);
  const I C = static_cast<I>(g.c);
  const typename Storage<D>::T* dy_row = dy + static_cast<I>(offset(g, n, ot, oh, 0, g.out) + c);
  // Corner (i, j, k) enters the t sum with weight dw(i) * wh[j] * ww[k], where the derivative
  // weight dw is -1 for corner 0 and +1 for corner 1; the h and w sums likewise. Multiplying by -1
  // is exact, so the term is +-(wh[j] * ww[k]) * v: 12 products instead of 24 weights, and the same
  // bits as forming (dw * wh) * ww first.
  float pt[2][2], ph[2][2], pw[2][2];
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      pt[a][b] = r.wh[a] * r.ww[b];
      ph[a][b] = r.wt[a] * r.ww[b];
      pw[a][b] = r.wt[a] * r.wh[b];
    }
  float g0 = grad[0], g1 = grad[1], g2 = grad[2];
  walk_row<D, I, /*kAdjoint=*/false, /*kUnitW=*/false, /*kMayCarry=*/false>(
      x, g, cs, r, begin, end,
      [&]<bool kAllOn, typename Corners>(I ow, const Corners& corner, const bool(&w_on)[2]) {
        const float upstream = Storage<D>::load(RS_LOAD(dy_row + ow * C));
        float gt = 0.f, gh = 0.f, gw = 0.f;
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int k = 0; k < 2; ++k) {
              const float v = corner(i, j, k);
              const bool on = kAllOn || (r.t_on[i] && r.h_on[j] && w_on[k]);
              const float mt = pt[j][k] * v, mh = ph[i][k] * v, mw = pw[i][j] * v;
              const float st = i ? gt + mt : gt - mt, sh = j ? gh + mh : gh - mh,
                          sw = k ? gw + mw : gw - mw;
              gt = on ? st : gt;
              gh = on ? sh : gh;
              gw = on ? sw : gw;
            }
        g0 += upstream * gt;
        g1 += upstream * gh;
        g2 += upstream * gw;
      });
  grad[0] = g0;
  grad[1] = g1;
  grad[2] = g2;
}

// ---------------------------------------------------------------------------------------------
// The shift gradient's deterministic reduction. Pass 1: chunk p of P covers output points
// [chunk_begin(p), chunk_begin(p + 1)) of the N * To * Ho * Wo points (row-major) and, per channel,
// sums them in that order (shift_grad_row over the pieces of rows it covers). Pass 2: entry i = 3 * c + a of dshift is the sum over chunks, formed as
// kReduceLanes interleaved lane sums (lane l adds chunks l, l + L, ... in order) followed by a tree
// of fixed shape. P comes from the shape only, so every platform and rerun gives the same bits.
// ---------------------------------------------------------------------------------------------
RS_HD int64_t chunk_begin(int64_t points, int64_t chunks, int64_t p) { return points * p / chunks; }

// Adds the shift gradient of channel c over output points [begin, end) to grad, row piece by row
// piece in point order.
template <DType D, typename I>
RS_HD void shift_grad_points(const typename Storage<D>::T* __restrict__ x,
                             const typename Storage<D>::T* __restrict__ dy, const Geometry& g,
                             const ChannelShift& cs, int64_t begin, int64_t end, int64_t c,
                             float (&grad)[3]) {
  if (begin >= end) return;
  // I-typed loop state: it stays live around the row walk, so it should cost one register each;
  // the row's (n, t, h) is derived from its index per row (a chunk spans one to a few rows).
  const I wo = static_cast<I>(g.out[2]);
  I row = static_cast<I>(begin / g.out[2]), ow = static_cast<I>(begin) - row * wo;
  for (I left = static_cast<I>(end - begin); left > 0; ++row) {
    const I ho = static_cast<I>(g.out[1]), to = static_cast<I>(g.out[0]);
    const I stop = left < wo - ow ? ow + left : wo;
    shift_grad_row<D, I>(x, dy, g, cs, row / (ho * to), (row / ho) % to, row % ho, c, ow, stop,
                         grad);
    left -= stop - ow;
    ow = 0;
  }
}

constexpr int kReduceLanes = 64;

RS_HD float reduce_lane_sum(const float* partials, int64_t chunks, int64_t c3, int64_t i,
                            int lane) {
  float s = 0.f;
#pragma unroll 4
  for (int64_t p = lane; p < chunks; p += kReduceLanes) s += partials[p * c3 + i];
  return s;
}

// One step of the tree over lane sums: lane l < half adds lane l + half.
RS_HD void reduce_tree_step(float* lane_sums, int lane, int half, int lane_stride) {
  if (lane < half) lane_sums[lane * lane_stride] += lane_sums[(lane + half) * lane_stride];
}

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MATH_H_
