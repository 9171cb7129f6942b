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
#define RS_HD __host__ __device__ __forceinline__
#else
#define RS_HD inline
#endif

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

RS_HD float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
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

// Round to nearest even, overflow to infinity, subnormals kept, NaN stays NaN.
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
    double d = static_cast<double>(shift3[a]);
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

// Weight of corner k in {0, 1} at fraction r, and its derivative with respect to the shift.
RS_HD float corner_weight(float r, int k) { return k ? r : 1.f - r; }
RS_HD float corner_dweight(int k) { return k ? 1.f : -1.f; }

// Forward tap: input index read by output index `o` for corner k on axis a, or -1 if outside.
RS_HD int64_t forward_tap(const Geometry& g, const ChannelShift& cs, int a, int64_t o, int k) {
  const int64_t i = o * g.stride[a] - g.pad[a] + cs.q[a] + k;
  return (i >= 0 && i < g.in[a]) ? i : -1;
}

// Adjoint tap: output index whose corner k reads input index `i` on axis a, or -1 if none does.
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

// ---------------------------------------------------------------------------------------------
// Per-point kernels. `src` is indexed channels-last with spatial extents `src_extent`; c is added
// by the caller through the pointer. All accumulate in f32 in a fixed order.
// ---------------------------------------------------------------------------------------------

// y[n, ot, oh, ow, c] (forward) or dx[n, it, ih, iw, c] (input gradient, src = dy): both are a sum
// of 8 corner reads with weights wt * wh * ww; they differ in how the corner index is found.
template <DType D, bool kAdjoint>
RS_HD float interpolate_point(const typename Storage<D>::T* src, const Geometry& g,
                              const ChannelShift& cs, int64_t n, int64_t p0, int64_t p1,
                              int64_t p2, int64_t c) {
  if (!cs.finite) return NAN;
  const int64_t* src_extent = kAdjoint ? g.out : g.in;
  int64_t idx[3][2];
  const int64_t pos[3] = {p0, p1, p2};
  for (int a = 0; a < 3; ++a)
    for (int k = 0; k < 2; ++k)
      idx[a][k] = kAdjoint ? adjoint_tap(g, cs, a, pos[a], k) : forward_tap(g, cs, a, pos[a], k);
  // Corners outside the input or of weight 0 are skipped: an integer shift reads one corner per
  // axis, and an infinite neighbour of weight 0 cannot turn the result into NaN.
  for (int a = 0; a < 3; ++a)
    for (int k = 0; k < 2; ++k)
      if (corner_weight(cs.r[a], k) == 0.f) idx[a][k] = -1;
  float acc = 0.f;
  for (int i = 0; i < 2; ++i) {
    if (idx[0][i] < 0) continue;
    float acc_t = 0.f;
    for (int j = 0; j < 2; ++j) {
      if (idx[1][j] < 0) continue;
      float acc_h = 0.f;
      for (int k = 0; k < 2; ++k) {
        if (idx[2][k] < 0) continue;
        const float v =
            Storage<D>::load(src[offset(g, n, idx[0][i], idx[1][j], idx[2][k], src_extent) + c]);
        acc_h += corner_weight(cs.r[2], k) * v;
      }
      acc_t += corner_weight(cs.r[1], j) * acc_h;
    }
    acc += corner_weight(cs.r[0], i) * acc_t;
  }
  return acc;
}

// Adds dy[n, ot, oh, ow, c] * d y / d shift[c, a] to grad[a] for a = t, h, w. cs must come from the
// unquantized shift (straight-through estimator for quantize=True).
template <DType D>
RS_HD void shift_grad_point(const typename Storage<D>::T* x, const typename Storage<D>::T* dy,
                            const Geometry& g, const ChannelShift& cs, int64_t n, int64_t ot,
                            int64_t oh, int64_t ow, int64_t c, float grad[3]) {
  const float upstream = Storage<D>::load(dy[offset(g, n, ot, oh, ow, g.out) + c]);
  if (!cs.finite) {
    grad[0] = grad[1] = grad[2] = NAN;
    return;
  }
  int64_t idx[3][2];
  const int64_t pos[3] = {ot, oh, ow};
  for (int a = 0; a < 3; ++a)
    for (int k = 0; k < 2; ++k) idx[a][k] = forward_tap(g, cs, a, pos[a], k);
  float gt = 0.f, gh = 0.f, gw = 0.f;
  for (int i = 0; i < 2; ++i) {
    if (idx[0][i] < 0) continue;
    for (int j = 0; j < 2; ++j) {
      if (idx[1][j] < 0) continue;
      for (int k = 0; k < 2; ++k) {
        if (idx[2][k] < 0) continue;
        const float v = Storage<D>::load(x[offset(g, n, idx[0][i], idx[1][j], idx[2][k], g.in) + c]);
        const float wt = corner_weight(cs.r[0], i), wh = corner_weight(cs.r[1], j),
                    ww = corner_weight(cs.r[2], k);
        gt += corner_dweight(i) * wh * ww * v;
        gh += wt * corner_dweight(j) * ww * v;
        gw += wt * wh * corner_dweight(k) * v;
      }
    }
  }
  grad[0] += upstream * gt;
  grad[1] += upstream * gh;
  grad[2] += upstream * gw;
}

// Rows of the shift-gradient reduction: chunk p of P covers output rows [begin, end) of the
// N * To * Ho rows. The partition depends only on the shape, never on the thread count, so the
// two-pass reduction (per-chunk partial sums, then chunks summed in order) is bit-reproducible.
RS_HD int64_t chunk_begin(int64_t rows, int64_t chunks, int64_t p) { return rows * p / chunks; }

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MATH_H_
