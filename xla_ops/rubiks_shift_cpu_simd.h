// AVX-512 CPU kernels of the RubiksShift op (forward and input gradient at w stride 1), chosen at
// run time where the CPU has AVX-512 (cpu_simd_available); elsewhere the scalar row kernels of
// rubiks_shift_math.h run. Included by rubiks_shift_cpu.cc only.
//
// Why a transpose: channels are the minor axis of x, and every channel reads its own integer
// offset, so vectorising across channels turns each corner load into a gather. Along w, one
// channel's corners are the same contiguous run shifted by that channel's offset, so this kernel
// works on per-channel rows: it transposes the source frames of a sample, (H rows) x (W, C), into
// (H rows) x (C, W) float32 rows in a per-thread buffer (from cache, read by the 8 corners of every
// point), interpolates 16 destination columns per instruction with masked unaligned loads (a masked
// lane reads nothing and gives 0), and transposes each finished destination row back to (W, C).
//
// Where every 16-channel block reads at most two sources per corner (shifts within (-1, 1) always
// do), interpolate_rows_cl needs no transpose: a vector is 16 channels of one column, and each
// distinct source of a (block, corner) is merged in by one masked load (ChannelsLastPlan).
//
// Same bits as the scalar kernels: every lane runs interpolate_point's operations in its order
// (multiply, then add, each rounded; no FMA), and a corner is skipped where the scalar kernel skips
// it for the whole row (t/h corner absent or of weight 0, w corner of weight 0). A w corner outside
// the source, which the scalar kernel drops by a select, adds the product of its finite weight and
// 0 here: +-0, which leaves every accumulator as it is (an accumulator starts at +0 and a sum is -0
// only when both terms are, so it is never -0).
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "rubiks_shift_math.h"

namespace rubiks {

// The CPU has AVX-512 F/BW/VL/DQ.
inline bool cpu_simd_supported() {
  static const bool supported = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return supported;
}

// Whether the handlers use the AVX-512 kernels: where supported, unless RUBIKS_JAX_CPU_SIMD=0 or
// set_cpu_simd(false) (A/B measurements, and tests of the scalar kernels on an AVX-512 machine).
inline std::atomic<bool>& cpu_simd_switch() {
  static std::atomic<bool> on = [] {
    const char* env = std::getenv("RUBIKS_JAX_CPU_SIMD");
    return !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return on;
}

inline bool cpu_simd_available() { return cpu_simd_supported() && cpu_simd_switch().load(); }

// Returns whether the AVX-512 kernels are used after the call.
inline bool set_cpu_simd(bool on) {
  cpu_simd_switch().store(on);
  return cpu_simd_available();
}

// Whether the AVX-512 forward and input gradient run channels last (interpolate_rows_cl) where
// every (16-channel block, corner) has at most two sources, the transposing kernel
// (interpolate_rows) elsewhere; off: always the transposing one. Both give the same bits; the
// switch is for A/B measurements and for testing both kernels on one machine.
inline std::atomic<bool>& cpu_channels_last_switch() {
  static std::atomic<bool> on{true};
  return on;
}

inline void set_cpu_channels_last(bool on) { cpu_channels_last_switch().store(on); }

// Calls that ran interpolate_rows_cl: the tests read it to know which kernel a case reached.
inline std::atomic<int64_t>& cpu_channels_last_calls() {
  static std::atomic<int64_t> calls{0};
  return calls;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

namespace simd {

constexpr int64_t kLanes = 16;

inline int64_t round_up(int64_t v) { return (v + kLanes - 1) / kLanes * kLanes; }

// Lanes l of a vector starting at column `base` with lo <= base + l < hi.
inline __mmask16 range_mask(int64_t base, int64_t lo, int64_t hi) {
  const int64_t a = std::clamp<int64_t>(lo - base, 0, kLanes);
  const int64_t b = std::clamp<int64_t>(hi - base, 0, kLanes);
  if (b <= a) return 0;
  const uint32_t bits = ((1u << b) - 1u) & ~((1u << a) - 1u);
  return static_cast<__mmask16>(bits);
}

// 16 storage elements <-> 16 float32 lanes; masked lanes are neither read nor written (a masked
// load gives 0). The conversions round as Storage<D> does (bfloat16 by the same integer steps;
// float16 by the F16C instruction, to nearest even: equal to f32_to_f16 except NaN payloads).
template <DType D>
inline __m512 load16(const typename Storage<D>::T* p, __mmask16 m) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, p);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if constexpr (D == DType::kBF16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  }
}

template <DType D>
inline void store16(typename Storage<D>::T* p, __mmask16 m, __m512 v) {
  if constexpr (D == DType::kF32) {
    _mm512_mask_storeu_ps(p, m, v);
  } else if constexpr (D == DType::kBF16) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet)));
  } else {
    _mm256_mask_storeu_epi16(p, m,
                             _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

// In-register transpose of a 16 x 16 float32 block: lane j of r[i] <- lane i of r[j].
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  // Within each 128-bit lane L, interleave rows: pairs, then 4 x 4 blocks. Afterwards lane L of
  // r[4g + s] holds column 4L + s of rows 4g .. 4g + 3.
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]),
                  c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // Column 4L + s gathers lane L of r[s], r[4 + s], r[8 + s], r[12 + s]: two rounds of 128-bit
  // lane shuffles.
  for (int s = 0; s < 4; ++s) {
    t[s] = _mm512_shuffle_f32x4(r[s], r[4 + s], 0x44);       // r[s].L0 L1, r[4+s].L0 L1
    t[4 + s] = _mm512_shuffle_f32x4(r[s], r[4 + s], 0xee);   // r[s].L2 L3, r[4+s].L2 L3
    t[8 + s] = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0x44);
    t[12 + s] = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0xee);
  }
  for (int s = 0; s < 4; ++s) {
    r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
    r[4 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xdd);
    r[8 + s] = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0x88);
    r[12 + s] = _mm512_shuffle_f32x4(t[4 + s], t[12 + s], 0xdd);
  }
}

// dst (cols x rows, row stride dst_stride, float32) = transpose of src (rows x cols, row stride
// src_stride, storage D). Every dst row is written in whole vectors of 16 (dst_stride and the
// row length rounded up to 16 must fit), lanes past `rows` with 0.
template <DType D>
inline void transpose_in(const typename Storage<D>::T* src, int64_t src_stride, int64_t rows,
                         int64_t cols, float* dst, int64_t dst_stride) {
  // Row blocks outer: the source is read in address order, 16 rows at a time.
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t nr = std::min<int64_t>(kLanes, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += kLanes) {
      const __mmask16 cm = range_mask(c0, 0, cols);
      const int64_t nc = std::min<int64_t>(kLanes, cols - c0);
      __m512 v[16];
      if (nr == kLanes) {
        for (int64_t i = 0; i < 16; ++i) v[i] = load16<D>(src + (r0 + i) * src_stride + c0, cm);
      } else {
        for (int64_t i = 0; i < 16; ++i)
          v[i] = i < nr ? load16<D>(src + (r0 + i) * src_stride + c0, cm) : _mm512_setzero_ps();
      }
      transpose16(v);
      if (nc == kLanes) {
        for (int64_t i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (c0 + i) * dst_stride + r0, v[i]);
      } else {
        for (int64_t i = 0; i < nc; ++i) _mm512_storeu_ps(dst + (c0 + i) * dst_stride + r0, v[i]);
      }
    }
  }
}

// out[i] = the sum of the 16 lanes of acc[i] (a fixed tree), i < count.
inline void reduce_lanes(const float* acc, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = _mm512_reduce_add_ps(_mm512_loadu_ps(acc + i * kLanes));
}

// Per-thread scratch, reused across calls (a fresh buffer per call would pay ~2 us per page
// fault), 64-byte aligned: the kernels read and write it in whole 64-byte vectors, and from a
// vector's 16-byte alignment every one of them would span two cache lines (aligning it made the
// forward 6-10% faster, measured).
template <typename V>
inline V* scratch(std::vector<V>& buf, int64_t n) {
  const int64_t pad = 64 / sizeof(V);
  if (static_cast<int64_t>(buf.size()) < n + pad) buf.resize(n + pad);
  const uintptr_t at = reinterpret_cast<uintptr_t>(buf.data());
  return buf.data() + ((64 - at % 64) % 64) / sizeof(V);
}

// Copies n storage elements with streaming stores where the destination is 64-byte aligned: the
// destination is written whole and not read again by this kernel, so its lines need not be read
// into the cache first (that read-for-ownership would add a third memory pass).
template <typename T>
inline void stream_copy(const T* src, T* dst, int64_t n) {
  const int64_t per = 64 / sizeof(T);
  int64_t head = ((64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64) / sizeof(T);
  if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) != 0) head = n;  // never for XLA buffers
  head = std::min(head, n);
  std::memcpy(dst, src, head * sizeof(T));
  int64_t i = head;
  for (; i + per <= n; i += per)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i),
                        _mm512_loadu_si512(reinterpret_cast<const void*>(src + i)));
  std::memcpy(dst + i, src + i, (n - i) * sizeof(T));
}

// One corner pair of an axis for one channel: the source index of each corner and its weight. A
// corner the scalar kernel skips (outside, or of weight 0) has index -1 and weight 0: it is then
// read from a row of zeros, and 0 * 0 adds +0, which changes no sum (see the top of this file).
struct CornerPair {
  int64_t index[2];
  float weight[2];
};

// What every task of one call shares: per channel, the w offsets and weights of the two corners
// and the lanes of each destination vector whose corner lies in the source; per destination frame
// p0 and per destination row p1, every channel's t and h corners.
struct InterpolationPlan {
  int64_t vectors;                   // destination vectors of 16 columns per row
  std::vector<int64_t> w_off;        // (C, 2): corner k of column p reads source column p + off
  std::vector<float> w_weight;       // (C, 2): 0 where the corner is skipped
  std::vector<__mmask16> w_mask;     // (C, 2, vectors): no lane where the corner is skipped
  std::vector<CornerPair> t_taps;    // (E0, C)
  std::vector<CornerPair> h_taps;    // (E1, C)
  std::vector<uint8_t> finite;       // (C,): 0 where the shift is not finite (output NaN)
  int64_t ring;                      // source rows kept per source frame (see interpolate_rows)
  std::vector<int64_t> slot;         // (source rows,): h mod ring, the ring slot of source row h
  std::vector<int64_t> h_lo, h_hi;   // (E1,): the source rows destination row p1 reads
};

// kWeighted: as row_taps (interpolation: corners of weight 0 are skipped; the shift gradient keeps
// them).
template <bool kAdjoint, bool kWeighted = true>
InterpolationPlan plan_interpolation_cpu(const Geometry& g, const ChannelShift* shifts) {
  const int64_t* se = kAdjoint ? g.out : g.in;
  const int64_t* de = kAdjoint ? g.in : g.out;
  const int64_t C = g.c;
  InterpolationPlan plan;
  plan.vectors = round_up(de[2]) / kLanes;
  plan.w_off.resize(2 * C);
  plan.w_weight.resize(2 * C);
  plan.w_mask.resize(2 * C * plan.vectors);
  plan.t_taps.resize(de[0] * C);
  plan.h_taps.resize(de[1] * C);
  plan.finite.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const ChannelShift& cs = shifts[c];
    plan.finite[c] = cs.finite;
    const RowTaps w = row_taps<kAdjoint, kWeighted>(g, cs, 0, 0);
    const int64_t q = saturated_q(g, cs, 2);
    for (int k = 0; k < 2; ++k) {
      const int64_t off = kAdjoint ? g.pad[2] - q - k : q + k - g.pad[2];
      plan.w_off[2 * c + k] = off;
      plan.w_weight[2 * c + k] = w.w_use[k] ? w.ww[k] : 0.f;
      for (int64_t b = 0; b < plan.vectors; ++b)
        plan.w_mask[(2 * c + k) * plan.vectors + b] =
            w.w_use[k] ? range_mask(b * kLanes + off, 0, se[2]) & range_mask(b * kLanes, 0, de[2])
                       : 0;
    }
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      const RowTaps r = row_taps<kAdjoint, kWeighted>(g, cs, p0, 0);
      for (int i = 0; i < 2; ++i) {
        plan.t_taps[p0 * C + c].index[i] = r.t_on[i] ? r.t[i] : -1;
        plan.t_taps[p0 * C + c].weight[i] = r.t_on[i] ? r.wt[i] : 0.f;
      }
    }
    for (int64_t p1 = 0; p1 < de[1]; ++p1) {
      const RowTaps r = row_taps<kAdjoint, kWeighted>(g, cs, 0, p1);
      for (int j = 0; j < 2; ++j) {
        plan.h_taps[p1 * C + c].index[j] = r.h_on[j] ? r.h[j] : -1;
        plan.h_taps[p1 * C + c].weight[j] = r.h_on[j] ? r.wh[j] : 0.f;
      }
    }
  }
  // The source rows one destination row reads span at most `ring` rows, so a ring of that many
  // rows per source frame never evicts a row still needed for the current destination row, and as
  // the destination row advances the span only moves forward.
  plan.ring = 1;
  for (int64_t p1 = 0; p1 < de[1]; ++p1) {
    int64_t lo = se[1], hi = -1;
    for (int64_t c = 0; c < C; ++c)
      for (int j = 0; j < 2; ++j) {
        const int64_t h = plan.h_taps[p1 * C + c].index[j];
        if (h < 0) continue;
        lo = std::min(lo, h);
        hi = std::max(hi, h);
      }
    plan.h_lo.push_back(lo);
    plan.h_hi.push_back(hi);
    plan.ring = std::max(plan.ring, hi - lo + 1);
  }
  plan.ring = std::min(plan.ring, se[1]);
  plan.slot.resize(se[1]);
  for (int64_t h = 0; h < se[1]; ++h) plan.slot[h] = h % plan.ring;
  return plan;
}

// A row of at least `floats` zeros (or NaN), for corners that are absent (non-finite shifts).
inline const float* zero_row(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.assign(floats, 0.f);
  return buf.data();
}

inline const float* nan_row(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.assign(floats, NAN);
  return buf.data();
}

// Prefetches (into L2) rows queued for the next destination row, a few lines at a time, spread
// over the work on the current one: the source rows a destination row adds lie in different
// frames, far apart, so the hardware prefetchers meet each with a cold start, and a burst of
// prefetches at once would overflow the miss queues.
class RowPrefetcher {
 public:
  void clear() {
    rows_.clear();
    total_ = row_ = line_ = 0;
  }
  void queue(const void* row, int64_t bytes) {
    rows_.push_back({static_cast<const char*>(row), (bytes + 63) / 64});
    total_ += rows_.back().lines;
  }
  // Lines per call of prefetch() that cover the queue in `calls` calls.
  int64_t share(int64_t calls) const { return (total_ + calls - 1) / std::max<int64_t>(calls, 1); }
  void prefetch(int64_t lines) {
    for (; lines > 0 && row_ < static_cast<int64_t>(rows_.size()); --lines) {
      _mm_prefetch(rows_[row_].start + line_ * 64, _MM_HINT_T1);
      if (++line_ == rows_[row_].lines) line_ = 0, ++row_;
    }
  }

 private:
  struct Row {
    const char* start;
    int64_t lines;
  };
  std::vector<Row> rows_;
  int64_t total_ = 0, row_ = 0, line_ = 0;
};

// The w sums (and, kDerivative, the w differences v1 - v0) of the source rows of one sample, in
// a per-thread ring: source row (t, h) lives in slot (t, h mod ring). The rows one destination row
// reads span at most `ring` rows of a frame, so none of them is evicted while that destination row
// is formed, and as the destination row advances the span only moves forward: a task forms each
// source row it reads about once, not once for each of the 4 destination rows that read it.
// Slot layout: (C, dw) w sums, then (C, dw) w differences; lanes past the destination extent are 0.
template <DType D, bool kAdjoint, bool kDerivative>
class SourceRing {
 public:
  using T = typename Storage<D>::T;
  static constexpr int64_t kParts = kDerivative ? 2 : 1;

  SourceRing(const T* src, const Geometry& g, const InterpolationPlan& plan, int64_t n)
      : g_(g), plan_(plan), se_(kAdjoint ? g.out : g.in), C_(g.c), sw_(round_up(se_[2])),
        dw_(plan.vectors * kLanes), part_(C_ * dw_), src_(src + n * se_[0] * se_[1] * se_[2] * C_) {
    thread_local std::vector<float> ring, xt;
    thread_local std::vector<int64_t> tags;
    ring_ = scratch(ring, se_[0] * plan.ring * kParts * part_);
    xt_ = scratch(xt, C_ * sw_);
    tag_ = scratch(tags, se_[0] * plan.ring);
    std::fill(tag_, tag_ + se_[0] * plan.ring, int64_t{-1});
  }

  // Forms every source row that destination row p1 reads, in every frame, and queues in `ahead`
  // the rows that destination row p1 + 1 adds.
  void load(int64_t p1, RowPrefetcher& ahead) {
    for (int64_t t = 0; t < se_[0]; ++t)
      for (int64_t h = plan_.h_lo[p1]; h <= plan_.h_hi[p1]; ++h) form(t, h);
    if (p1 + 1 >= static_cast<int64_t>(plan_.h_hi.size())) return;
    for (int64_t h = std::max(plan_.h_hi[p1] + 1, plan_.h_lo[p1 + 1]); h <= plan_.h_hi[p1 + 1]; ++h)
      for (int64_t t = 0; t < se_[0]; ++t)
        ahead.queue(src_ + (t * se_[1] + h) * se_[2] * C_, se_[2] * C_ * sizeof(T));
  }

  // Channel c of source row (t, h), formed by load(); its part 1 (differences) is part_floats()
  // further.
  const float* row(int64_t t, int64_t h, int64_t c) const {
    return ring_ + ((t * plan_.ring + plan_.slot[h]) * kParts * part_) + c * dw_;
  }
  // The distance from a row of frame t to the same row of frame t + 1.
  int64_t frame_step() const { return plan_.ring * kParts * part_; }
  int64_t part_floats() const { return part_; }

 private:
  void form(int64_t t, int64_t h) {
    const int64_t slot = t * plan_.ring + plan_.slot[h];
    if (tag_[slot] == h) return;
    tag_[slot] = h;
    transpose_in<D>(src_ + (t * se_[1] + h) * se_[2] * C_, C_, se_[2], C_, xt_, sw_);
    float* a = ring_ + slot * kParts * part_;
    const int64_t vectors = plan_.vectors;
    for (int64_t c = 0; c < C_; ++c) {
      const float* row = xt_ + c * sw_;
      const int64_t o0 = plan_.w_off[2 * c], o1 = plan_.w_off[2 * c + 1];
      const __mmask16* m0 = &plan_.w_mask[2 * c * vectors];
      const __mmask16* m1 = m0 + vectors;
      const __m512 w0 = _mm512_set1_ps(plan_.w_weight[2 * c]);
      const __m512 w1 = _mm512_set1_ps(plan_.w_weight[2 * c + 1]);
      for (int64_t b = 0; b < vectors; ++b) {
        const int64_t p = b * kLanes;
        const __m512 v0 = _mm512_maskz_loadu_ps(m0[b], row + p + o0);
        const __m512 v1 = _mm512_maskz_loadu_ps(m1[b], row + p + o1);
        _mm512_storeu_ps(a + c * dw_ + p,
                         _mm512_add_ps(_mm512_mul_ps(w0, v0), _mm512_mul_ps(w1, v1)));
        if constexpr (kDerivative) _mm512_storeu_ps(a + part_ + c * dw_ + p, _mm512_sub_ps(v1, v0));
      }
    }
  }

  const Geometry& g_;
  const InterpolationPlan& plan_;
  const int64_t* se_;
  const int64_t C_, sw_, dw_, part_;
  const T* src_;
  float* ring_;
  float* xt_;
  int64_t* tag_;
};

// Destination rows p1 in [row_begin, row_end) of every frame of sample n, y (forward) or dx
// (kAdjoint), at w stride 1.
//
// The trilinear sum is evaluated axis by axis, each partial sum formed once and reused: it is the
// scalar kernel's nesting, t(h(w(x))), and every inner sum depends on fewer indices than the
// destination point. The w sums depend on the source row (SourceRing). The h sums depend on
// (source frame t, destination row p1): formed once per p1 for every frame, and read by the 2
// destination frames whose t corners fall on t. The t sums give the destination row, 16 channels x
// 16 columns at a time, transposed back to (W, C) in registers and streamed out.
template <DType D, bool kAdjoint>
void interpolate_rows(const typename Storage<D>::T* __restrict__ src,
                      typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                      const InterpolationPlan& plan, int64_t n, int64_t row_begin,
                      int64_t row_end) {
  using T = typename Storage<D>::T;
  const int64_t* se = kAdjoint ? g.out : g.in;  // source extents
  const int64_t* de = kAdjoint ? g.in : g.out;  // destination extents
  const int64_t C = g.c, dw = plan.vectors * kLanes, part = C * dw, row_len = de[2] * C;
  SourceRing<D, kAdjoint, /*kDerivative=*/false> ring(src, g, plan, n);
  thread_local std::vector<float> h_buf, t_weights;
  thread_local std::vector<T> out_buf;
  thread_local std::vector<const float*> t_rows;
  float* h_sums = scratch(h_buf, se[0] * part);  // (source frame t, C, dw)
  const float* zeros = zero_row(dw);
  const float* nans = nan_row(dw);
  T* staged = scratch(out_buf, row_len);
  const float** tr = scratch(t_rows, 2 * C);
  float* tw = scratch(t_weights, 2 * C);
  const __m512 zero = _mm512_setzero_ps();
  RowPrefetcher ahead;
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    ring.load(p1, ahead);
    for (int64_t c = 0; c < C; ++c) {
      const CornerPair& taps = plan.h_taps[p1 * C + c];
      const float* r[2];
      int64_t step[2];
      for (int j = 0; j < 2; ++j) {
        const bool on = taps.index[j] >= 0;
        r[j] = on ? ring.row(0, taps.index[j], c) : zeros;
        step[j] = on ? ring.frame_step() : 0;
      }
      const __m512 w0 = _mm512_set1_ps(taps.weight[0]), w1 = _mm512_set1_ps(taps.weight[1]);
      for (int64_t t = 0; t < se[0]; ++t) {
        const float *r0 = r[0] + t * step[0], *r1 = r[1] + t * step[1];
        float* out = h_sums + (t * C + c) * dw;
        for (int64_t p = 0; p < dw; p += kLanes)
          _mm512_storeu_ps(out + p, _mm512_add_ps(_mm512_mul_ps(w0, _mm512_loadu_ps(r0 + p)),
                                                  _mm512_mul_ps(w1, _mm512_loadu_ps(r1 + p))));
      }
    }
    const int64_t share = ahead.share(de[0] * ((C + kLanes - 1) / kLanes));
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      for (int64_t c = 0; c < C; ++c) {
        const CornerPair& taps = plan.t_taps[p0 * C + c];
        for (int i = 0; i < 2; ++i) {
          const bool on = taps.index[i] >= 0;
          tr[2 * c + i] = on ? h_sums + (taps.index[i] * C + c) * dw : zeros;
          tw[2 * c + i] = on ? taps.weight[i] : 0.f;
        }
        if (!plan.finite[c]) {  // NaN * 1 + 0 * 0: NaN, the scalar kernel's
          tr[2 * c] = nans, tw[2 * c] = 1.f;
          tr[2 * c + 1] = zeros, tw[2 * c + 1] = 0.f;
        }
      }
      for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
        ahead.prefetch(share);
        const int64_t nc = std::min<int64_t>(kLanes, C - c0);
        const __mmask16 cm = range_mask(c0, 0, C);
        for (int64_t b = 0; b < plan.vectors; ++b) {
          const int64_t p = b * kLanes;
          __m512 v[16];
          auto t_sum = [&](int64_t c) {
            const __m512 sum = _mm512_add_ps(
                _mm512_mul_ps(_mm512_set1_ps(tw[2 * c]), _mm512_loadu_ps(tr[2 * c] + p)),
                _mm512_mul_ps(_mm512_set1_ps(tw[2 * c + 1]), _mm512_loadu_ps(tr[2 * c + 1] + p)));
            return _mm512_add_ps(sum, zero);  // the scalar kernel's result where sum is -0
          };
          if (nc == kLanes) {
            for (int64_t i = 0; i < 16; ++i) v[i] = t_sum(c0 + i);
          } else {
            for (int64_t i = 0; i < 16; ++i) v[i] = i < nc ? t_sum(c0 + i) : zero;
          }
          transpose16(v);
          const int64_t nw = std::min<int64_t>(kLanes, de[2] - p);
          for (int64_t l = 0; l < nw; ++l) store16<D>(staged + (p + l) * C + c0, cm, v[l]);
        }
      }
      stream_copy(staged, dst + (((n * de[0] + p0) * de[1] + p1) * de[2]) * C, row_len);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Channels-last interpolation: the same axis-by-axis sums as interpolate_rows, with vectors of 16
// channels at one column instead of 16 columns of one channel, so nothing is transposed. The lanes
// of a vector read different source columns (w), rows (h) and frames (t), but only a few distinct
// ones: lanes sharing a source are a group, and each group's value is merged into the vector by one
// masked load. Shifts in (-1, 1) give 2 groups per corner and axis; wider spreads give more groups
// (more loads), never a wrong result.
// ---------------------------------------------------------------------------------------------

// A (block, corner) of an axis: its lanes read at most two distinct sources (offsets along w,
// indices along h and t), value[g] for the lanes of mask[g]; a mask may be empty.
struct LanePair {
  int64_t value[2];
  __mmask16 mask[2];
};

struct ChannelsLastPlan {
  bool usable;                // every (block, corner) has at most two sources
  int64_t blocks, cp;         // 16-channel blocks; channels padded to a whole block
  std::vector<LanePair> w, h, t;  // (block, k), (p1, block, j), (p0, block, i)
  std::vector<float> w_weight, h_weight, t_weight;  // (2, cp), (E1, 2, cp), (E0, 2, cp); 0: skipped
  std::vector<__mmask16> not_finite;                // (blocks,): lanes whose output is NaN
};

// The per-lane form of `plan` (built with kWeighted = true).
inline ChannelsLastPlan plan_channels_last(const Geometry& g, const InterpolationPlan& plan,
                                           bool adjoint) {
  const int64_t* de = adjoint ? g.in : g.out;
  const int64_t C = g.c;
  ChannelsLastPlan cl;
  cl.usable = true;
  cl.blocks = (C + kLanes - 1) / kLanes;
  cl.cp = cl.blocks * kLanes;
  // The lanes with on[l] grouped by value[l].
  auto pair = [&](const int64_t* value, const bool* on) {
    LanePair lp{{0, 0}, {0, 0}};
    int used = 0;
    for (int64_t l = 0; l < kLanes; ++l) {
      if (!on[l]) continue;
      int gi = 0;
      while (gi < used && lp.value[gi] != value[l]) ++gi;
      if (gi == 2) {
        cl.usable = false;
        continue;
      }
      if (gi == used) lp.value[used++] = value[l];
      lp.mask[gi] |= static_cast<__mmask16>(1u << l);
    }
    return lp;
  };
  int64_t v[kLanes];
  bool on[kLanes];
  cl.w_weight.assign(2 * cl.cp, 0.f);
  for (int64_t b = 0; b < cl.blocks; ++b)
    for (int k = 0; k < 2; ++k) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t c = b * kLanes + l;
        on[l] = c < C && plan.w_weight[2 * c + k] != 0.f;
        v[l] = on[l] ? plan.w_off[2 * c + k] : 0;
        if (on[l]) cl.w_weight[k * cl.cp + c] = plan.w_weight[2 * c + k];
      }
      cl.w.push_back(pair(v, on));
    }
  auto taps = [&](const std::vector<CornerPair>& pairs, int64_t extent, std::vector<LanePair>& out,
                  std::vector<float>& weight) {
    weight.assign(extent * 2 * cl.cp, 0.f);
    for (int64_t p = 0; p < extent; ++p)
      for (int64_t b = 0; b < cl.blocks; ++b)
        for (int i = 0; i < 2; ++i) {
          for (int64_t l = 0; l < kLanes; ++l) {
            const int64_t c = b * kLanes + l;
            on[l] = c < C && pairs[p * C + c].index[i] >= 0;
            v[l] = on[l] ? pairs[p * C + c].index[i] : 0;
            if (on[l]) weight[(p * 2 + i) * cl.cp + c] = pairs[p * C + c].weight[i];
          }
          out.push_back(pair(v, on));
        }
  };
  taps(plan.h_taps, de[1], cl.h, cl.h_weight);
  taps(plan.t_taps, de[0], cl.t, cl.t_weight);
  cl.not_finite.assign(cl.blocks, 0);
  for (int64_t c = 0; c < C; ++c)
    if (!plan.finite[c]) cl.not_finite[c / kLanes] |= static_cast<__mmask16>(1u << (c % kLanes));
  return cl;
}

// v with the lanes of `m` loaded from p (float32 in registers); other lanes kept. Masked-off lanes
// are not read (no fault), so p may lie outside the buffer where m is 0.
template <DType D>
inline __m512 merge16(__m512 v, __mmask16 m, const typename Storage<D>::T* p) {
  if constexpr (D == DType::kF32)
    return _mm512_mask_loadu_ps(v, m, p);
  else
    return _mm512_mask_mov_ps(v, m, load16<D>(p, m));
}

// The vector whose lanes of lp.mask[g] come from row r_g at the same column (float32 scratch rows);
// lanes of neither mask are +0.
inline __m512 merge_pair(const LanePair& lp, const float* r0, const float* r1) {
  return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(lp.mask[0], r0), lp.mask[1], r1);
}

// As interpolate_rows (same rows, same bits), channels last, one 16-channel block at a time
// through all three stages; needs cl.usable.
template <DType D, bool kAdjoint>
void interpolate_rows_cl(const typename Storage<D>::T* __restrict__ src,
                         typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                         const InterpolationPlan& plan, const ChannelsLastPlan& cl, int64_t n,
                         int64_t row_begin, int64_t row_end) {
  using T = typename Storage<D>::T;
  const int64_t* se = kAdjoint ? g.out : g.in;
  const int64_t* de = kAdjoint ? g.in : g.out;
  const int64_t C = g.c, cp = cl.cp, blocks = cl.blocks, row_len = de[2] * C, W = de[2];
  const int64_t R = plan.ring, slots = se[0] * R, bl = W * kLanes;  // bl: one block's row
  const T* sample = src + n * se[0] * se[1] * se[2] * C;
  thread_local std::vector<float> ring_buf, h_buf;
  thread_local std::vector<int64_t> tag_buf;
  thread_local std::vector<T> out_buf;
  float* ring = scratch(ring_buf, blocks * slots * bl);   // (block, frame, slot, W, 16)
  int64_t* tag = scratch(tag_buf, blocks * slots);
  std::fill(tag, tag + blocks * slots, int64_t{-1});
  float* h_sums = scratch(h_buf, se[0] * bl);              // (frame, W, 16) of the current block
  T* staged = scratch(out_buf, de[0] * row_len);           // (p0, W, C)
  const __m512 zero = _mm512_setzero_ps(), nan = _mm512_set1_ps(NAN);
  const uint64_t cols = static_cast<uint64_t>(se[2]);
  RowPrefetcher ahead;
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    if (p1 + 1 < de[1])
      for (int64_t h = std::max(plan.h_hi[p1] + 1, plan.h_lo[p1 + 1]); h <= plan.h_hi[p1 + 1]; ++h)
        for (int64_t t = 0; t < se[0]; ++t)
          ahead.queue(sample + (t * se[1] + h) * se[2] * C, se[2] * C * sizeof(T));
    const int64_t share = ahead.share(blocks * (se[0] + de[0]));
    for (int64_t b = 0; b < blocks; ++b) {
      float* bring = ring + b * slots * bl;
      int64_t* btag = tag + b * slots;
      auto slot = [&](int64_t t, int64_t h) { return bring + (t * R + plan.slot[h]) * bl; };
      const LanePair k0 = cl.w[2 * b];
      const LanePair k1 = cl.w[2 * b + 1];
      const __m512 ww0 = _mm512_loadu_ps(&cl.w_weight[b * kLanes]);
      const __m512 ww1 = _mm512_loadu_ps(&cl.w_weight[cp + b * kLanes]);
      for (int64_t t = 0; t < se[0]; ++t) {
        ahead.prefetch(share);
        for (int64_t h = plan.h_lo[p1]; h <= plan.h_hi[p1]; ++h) {
          const int64_t s = t * R + plan.slot[h];
          if (btag[s] == h) continue;
          btag[s] = h;
          const T* base = sample + (t * se[1] + h) * se[2] * C + b * kLanes;
          float* a = bring + s * bl;
          if constexpr (D == DType::kF32) {
            for (int64_t p = 0; p < W; ++p) {
              auto in = [&](int64_t off, __mmask16 m) {
                return static_cast<uint64_t>(p + off) < cols ? m : __mmask16{0};
              };
              __m512 v0 = merge16<D>(zero, in(k0.value[0], k0.mask[0]), base + (p + k0.value[0]) * C);
              v0 = merge16<D>(v0, in(k0.value[1], k0.mask[1]), base + (p + k0.value[1]) * C);
              __m512 v1 = merge16<D>(zero, in(k1.value[0], k1.mask[0]), base + (p + k1.value[0]) * C);
              v1 = merge16<D>(v1, in(k1.value[1], k1.mask[1]), base + (p + k1.value[1]) * C);
              _mm512_storeu_ps(a + p * kLanes,
                               _mm512_add_ps(_mm512_mul_ps(ww0, v0), _mm512_mul_ps(ww1, v1)));
            }
          } else {
            // 16-bit storage: each distinct source column converted once, then blended.
            int64_t uniq[4], nu = 0, at[4];
            const int64_t vals[4] = {k0.value[0], k0.value[1], k1.value[0], k1.value[1]};
            const __mmask16 masks[4] = {k0.mask[0], k0.mask[1], k1.mask[0], k1.mask[1]};
            __mmask16 need[4] = {0, 0, 0, 0};
            for (int i = 0; i < 4; ++i) {
              int64_t u = 0;
              while (u < nu && uniq[u] != vals[i]) ++u;
              if (u == nu) uniq[nu++] = vals[i];
              at[i] = u;
              need[u] |= masks[i];
            }
            for (int64_t p = 0; p < W; ++p) {
              __m512 L[4];
              for (int64_t u = 0; u < nu; ++u)
                L[u] = load16<D>(base + (p + uniq[u]) * C,
                                 static_cast<uint64_t>(p + uniq[u]) < cols ? need[u] : __mmask16{0});
              __m512 v0 = _mm512_maskz_mov_ps(masks[0], L[at[0]]);
              v0 = _mm512_mask_mov_ps(v0, masks[1], L[at[1]]);
              __m512 v1 = _mm512_maskz_mov_ps(masks[2], L[at[2]]);
              v1 = _mm512_mask_mov_ps(v1, masks[3], L[at[3]]);
              _mm512_storeu_ps(a + p * kLanes,
                               _mm512_add_ps(_mm512_mul_ps(ww0, v0), _mm512_mul_ps(ww1, v1)));
            }
          }
        }
        const LanePair j0 = cl.h[(p1 * blocks + b) * 2];
        const LanePair j1 = cl.h[(p1 * blocks + b) * 2 + 1];
        const float *r00 = slot(t, j0.value[0]), *r01 = slot(t, j0.value[1]);
        const float *r10 = slot(t, j1.value[0]), *r11 = slot(t, j1.value[1]);
        const float* hw = &cl.h_weight[p1 * 2 * cp + b * kLanes];
        const __m512 w0 = _mm512_loadu_ps(hw), w1 = _mm512_loadu_ps(hw + cp);
        float* out = h_sums + t * bl;
        for (int64_t p = 0; p < W; ++p) {
          const int64_t o = p * kLanes;
          const __m512 u0 = merge_pair(j0, r00 + o, r01 + o), u1 = merge_pair(j1, r10 + o, r11 + o);
          _mm512_storeu_ps(out + o, _mm512_add_ps(_mm512_mul_ps(w0, u0), _mm512_mul_ps(w1, u1)));
        }
      }
      const __mmask16 bad = cl.not_finite[b], cm = range_mask(b * kLanes, 0, C);
      for (int64_t p0 = 0; p0 < de[0]; ++p0) {
        ahead.prefetch(share);
        const LanePair i0 = cl.t[(p0 * blocks + b) * 2];
        const LanePair i1 = cl.t[(p0 * blocks + b) * 2 + 1];
        const float* r00 = h_sums + i0.value[0] * bl;
        const float* r01 = h_sums + i0.value[1] * bl;
        const float* r10 = h_sums + i1.value[0] * bl;
        const float* r11 = h_sums + i1.value[1] * bl;
        const float* tw = &cl.t_weight[p0 * 2 * cp + b * kLanes];
        const __m512 w0 = _mm512_loadu_ps(tw), w1 = _mm512_loadu_ps(tw + cp);
        T* out = staged + p0 * row_len + b * kLanes;
        for (int64_t p = 0; p < W; ++p) {
          const int64_t o = p * kLanes;
          const __m512 u0 = merge_pair(i0, r00 + o, r01 + o), u1 = merge_pair(i1, r10 + o, r11 + o);
          __m512 sum = _mm512_add_ps(_mm512_mul_ps(w0, u0), _mm512_mul_ps(w1, u1));
          sum = _mm512_mask_mov_ps(sum, bad, nan);
          store16<D>(out + p * C, cm, _mm512_add_ps(sum, zero));
        }
      }
    }
    for (int64_t p0 = 0; p0 < de[0]; ++p0)
      stream_copy(staged + p0 * row_len, dst + (((n * de[0] + p0) * de[1] + p1) * de[2]) * C,
                  row_len);
  }
}

// Adds to acc ((C, 3, 16) float32 lane sums) the shift gradient of output rows p1 in
// [row_begin, row_end) of every frame of sample n, at w stride 1. `plan` is the forward's, built
// with kWeighted = false (corners of weight 0 count: their derivative weight is +-1).
//
// Per point, with v_ijk the corners and s = (-1, +1) the derivative weights, the gradient is
// dy * (sum s_i wh_j ww_k v, sum wt_i s_j ww_k v, sum wt_i wh_j s_k v), evaluated axis by axis as the
// forward: the w sums A and differences Dw of each source row (SourceRing), then per t corner the
// h sums of A and of Dw and the h difference of A, then the t difference and t sums. The order of
// the additions differs from the scalar kernels' (the lanes sum separately); the reduction is
// still fixed by the shape alone.
template <DType D>
void shift_grad_rows(const typename Storage<D>::T* __restrict__ x,
                     const typename Storage<D>::T* __restrict__ dy, const Geometry& g,
                     const InterpolationPlan& plan, int64_t n, int64_t row_begin, int64_t row_end,
                     float* __restrict__ acc) {
  const int64_t C = g.c, dw = plan.vectors * kLanes;
  SourceRing<D, /*kAdjoint=*/false, /*kDerivative=*/true> ring(x, g, plan, n);
  thread_local std::vector<float> dy_buf;
  float* dyt = scratch(dy_buf, C * dw);
  const float* zeros = zero_row(2 * C * dw);  // a whole slot: sums and differences
  const int64_t diff = ring.part_floats();
  RowPrefetcher ahead;
  const int64_t dy_row = g.out[2] * C;
  auto dy_at = [&](int64_t p0, int64_t p1) { return dy + ((n * g.out[0] + p0) * g.out[1] + p1) * dy_row; };
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    ring.load(p1, ahead);
    if (p1 + 1 < row_end)
      for (int64_t p0 = 0; p0 < g.out[0]; ++p0) ahead.queue(dy_at(p0, p1 + 1), dy_row * sizeof(*dy));
    const int64_t share = ahead.share(g.out[0] * C);
    for (int64_t p0 = 0; p0 < g.out[0]; ++p0) {
      transpose_in<D>(dy_at(p0, p1), C, g.out[2], C, dyt, dw);
      for (int64_t c = 0; c < C; ++c) {
        ahead.prefetch(share);
        const CornerPair& tt = plan.t_taps[p0 * C + c];
        const CornerPair& hh = plan.h_taps[p1 * C + c];
        const float* r[2][2];
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j)
            r[i][j] = tt.index[i] >= 0 && hh.index[j] >= 0 ? ring.row(tt.index[i], hh.index[j], c)
                                                           : zeros;
        // Absent corners read rows of zeros (and their weights do not matter).
        const __m512 wh0 = _mm512_set1_ps(hh.weight[0]), wh1 = _mm512_set1_ps(hh.weight[1]);
        const __m512 wt0 = _mm512_set1_ps(tt.weight[0]), wt1 = _mm512_set1_ps(tt.weight[1]);
        __m512 gt = _mm512_setzero_ps(), gh = gt, gw = gt;
        for (int64_t p = 0; p < dw; p += kLanes) {
          __m512 sum_h[2], diff_h[2], sum_hw[2];
          for (int i = 0; i < 2; ++i) {
            const __m512 a0 = _mm512_loadu_ps(r[i][0] + p), a1 = _mm512_loadu_ps(r[i][1] + p);
            const __m512 d0 = _mm512_loadu_ps(r[i][0] + diff + p);
            const __m512 d1 = _mm512_loadu_ps(r[i][1] + diff + p);
            sum_h[i] = _mm512_fmadd_ps(wh1, a1, _mm512_mul_ps(wh0, a0));
            diff_h[i] = _mm512_sub_ps(a1, a0);
            sum_hw[i] = _mm512_fmadd_ps(wh1, d1, _mm512_mul_ps(wh0, d0));
          }
          const __m512 up = _mm512_loadu_ps(dyt + c * dw + p);
          gt = _mm512_fmadd_ps(up, _mm512_sub_ps(sum_h[1], sum_h[0]), gt);
          gh = _mm512_fmadd_ps(up, _mm512_fmadd_ps(wt1, diff_h[1], _mm512_mul_ps(wt0, diff_h[0])),
                               gh);
          gw = _mm512_fmadd_ps(up, _mm512_fmadd_ps(wt1, sum_hw[1], _mm512_mul_ps(wt0, sum_hw[0])),
                               gw);
        }
        float* a = acc + c * 3 * kLanes;
        _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), gt));
        _mm512_storeu_ps(a + kLanes, _mm512_add_ps(_mm512_loadu_ps(a + kLanes), gh));
        _mm512_storeu_ps(a + 2 * kLanes, _mm512_add_ps(_mm512_loadu_ps(a + 2 * kLanes), gw));
      }
    }
  }
}

}  // namespace simd

#pragma GCC pop_options

}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_
