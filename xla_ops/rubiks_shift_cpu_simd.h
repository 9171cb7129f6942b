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
// Where every vector reads at most two sources per corner (shifts within (-1, 1) always do),
// interpolate_rows_cl needs no transpose: a vector is 16 consecutive elements of a (W, C) row,
// and each distinct source of a (vector phase, corner) is merged in by one masked load
// (ChannelsLastPlan).
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
#include <numeric>
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
inline __m512 widen16(__m256i h) {  // 16 bfloat16 or float16 -> float32, exact
  if constexpr (D == DType::kBF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  else
    return _mm512_cvtph_ps(h);
}

// bfloat16: the rounded value in the upper 16 bits of each 32-bit lane (lower bits arbitrary).
// NaN keeps its upper bits with the quiet bit set; everything else rounds to nearest even.
inline __m512i round_bf16_high(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  return _mm512_mask_or_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), u,
                              _mm512_set1_epi32(0x400000));
}

template <DType D>
inline __m256i narrow16(__m512 v) {  // 16 float32 -> 16 bfloat16 or float16
  if constexpr (D == DType::kBF16)
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(round_bf16_high(v), 16));
  else
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// Two float32 vectors as one 64-byte line of 32 bfloat16 or float16 elements, lo first. For
// bfloat16 one word permutation picks the 32 upper halves (no shift and narrowing per vector).
template <DType D>
inline __m512i narrow_line(__m512 lo, __m512 hi) {
  if constexpr (D == DType::kBF16) {
    const __m512i odd_words = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39,
                                               37, 35, 33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13,
                                               11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(round_bf16_high(lo), odd_words, round_bf16_high(hi));
  } else {
    return _mm512_inserti64x4(_mm512_castsi256_si512(narrow16<D>(lo)), narrow16<D>(hi), 1);
  }
}

template <DType D>
inline __m512 load16(const typename Storage<D>::T* p, __mmask16 m) {
  if constexpr (D == DType::kF32)
    return _mm512_maskz_loadu_ps(m, p);
  else
    return widen16<D>(_mm256_maskz_loadu_epi16(m, p));
}

template <DType D>
inline void store16(typename Storage<D>::T* p, __mmask16 m, __m512 v) {
  if constexpr (D == DType::kF32)
    _mm512_mask_storeu_ps(p, m, v);
  else
    _mm256_mask_storeu_epi16(p, m, narrow16<D>(v));
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
  // For tick(): spread the queue over the next `calls` calls, a line or a few every few calls.
  void spread(int64_t calls) {
    calls = std::max<int64_t>(calls, 1);
    per_ = std::max<int64_t>(1, (total_ + calls - 1) / calls);
    every_ = std::max<int64_t>(1, calls * per_ / std::max<int64_t>(total_, 1));
    ticks_ = 0;
  }
  void tick() {
    if (++ticks_ < every_) return;
    ticks_ = 0;
    prefetch(per_);
  }
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
  int64_t total_ = 0, row_ = 0, line_ = 0, per_ = 1, every_ = 1, ticks_ = 0;
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
// Channels-last interpolation: the same axis-by-axis sums as interpolate_rows, on the rows as they
// lie in memory, (W, C) with channels minor, so nothing is transposed. Vector v of a row holds its
// elements 16v .. 16v + 15, which may straddle pixels (C = 72: 4.5 vectors a pixel); lane l holds
// channel (16v + l) mod C, a pattern that repeats every P = lcm(C, 16) / 16 vectors (the vector's
// phase, v mod P). The lanes of a vector read different source columns (w), rows (h) and frames
// (t), but only a few distinct ones: lanes sharing a source are a group, and each group's value is
// merged into the vector by one masked load. Shifts in (-1, 1) give 2 groups per corner and axis;
// wider spreads may give more, and then the transposing kernel runs instead.
// ---------------------------------------------------------------------------------------------

// A (phase, corner) of an axis: its lanes read at most two distinct sources (offsets along w,
// indices along h and t), value[g] for the lanes of mask[g]; a mask may be empty.
struct LanePair {
  int64_t value[2];
  __mmask16 mask[2];
};

struct ChannelsLastPlan {
  bool usable;                    // every (phase, corner) has at most two sources
  int64_t phases;                 // P: lane l of a vector of phase u holds channel (16u + l) % C
  std::vector<LanePair> w, h, t;  // (phase, k), (p1, phase, j), (p0, phase, i)
  // Lane weights: (2, P, 16), (E1, 2, P, 16), (E0, 2, P, 16); 0 where the corner is skipped.
  std::vector<float> w_weight, h_weight, t_weight;
  std::vector<__mmask16> not_finite;  // (P,): lanes whose output is NaN
  int64_t w_lo, w_hi;                 // the least and greatest w offset any lane reads
};

// The per-lane form of `plan` (built with kWeighted = true).
inline ChannelsLastPlan plan_channels_last(const Geometry& g, const InterpolationPlan& plan,
                                           bool adjoint) {
  const int64_t* de = adjoint ? g.in : g.out;
  const int64_t C = g.c;
  ChannelsLastPlan cl;
  cl.usable = true;
  cl.phases = C / std::gcd(C, kLanes);
  const int64_t P = cl.phases, lanes = P * kLanes;
  auto channel = [&](int64_t u, int64_t l) { return (u * kLanes + l) % C; };
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
  cl.w_weight.assign(2 * lanes, 0.f);
  cl.w_lo = cl.w_hi = 0;
  for (int64_t u = 0; u < P; ++u)
    for (int k = 0; k < 2; ++k) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t c = channel(u, l);
        on[l] = plan.w_weight[2 * c + k] != 0.f;
        v[l] = on[l] ? plan.w_off[2 * c + k] : 0;
        if (!on[l]) continue;
        cl.w_weight[k * lanes + u * kLanes + l] = plan.w_weight[2 * c + k];
        cl.w_lo = std::min(cl.w_lo, v[l]);
        cl.w_hi = std::max(cl.w_hi, v[l]);
      }
      cl.w.push_back(pair(v, on));
    }
  auto taps = [&](const std::vector<CornerPair>& pairs, int64_t extent, std::vector<LanePair>& out,
                  std::vector<float>& weight) {
    weight.assign(extent * 2 * lanes, 0.f);
    for (int64_t p = 0; p < extent; ++p)
      for (int64_t u = 0; u < P; ++u)
        for (int i = 0; i < 2; ++i) {
          for (int64_t l = 0; l < kLanes; ++l) {
            const CornerPair& cp = pairs[p * C + channel(u, l)];
            on[l] = cp.index[i] >= 0;
            v[l] = on[l] ? cp.index[i] : 0;
            if (on[l]) weight[(p * 2 + i) * lanes + u * kLanes + l] = cp.weight[i];
          }
          out.push_back(pair(v, on));
        }
  };
  taps(plan.h_taps, de[1], cl.h, cl.h_weight);
  taps(plan.t_taps, de[0], cl.t, cl.t_weight);
  cl.not_finite.assign(P, 0);
  for (int64_t u = 0; u < P; ++u)
    for (int64_t l = 0; l < kLanes; ++l)
      if (!plan.finite[channel(u, l)]) cl.not_finite[u] |= static_cast<__mmask16>(1u << l);
  return cl;
}

// The vector whose lanes of m0 come from r0 and lanes of m1 from r1 (storage of type D, widened
// to float32 once, after the merge); lanes of neither mask are +0, and are not read.
template <DType D>
inline __m512 merge2(__mmask16 m0, const typename Storage<D>::T* r0, __mmask16 m1,
                     const typename Storage<D>::T* r1) {
  if constexpr (D == DType::kF32)
    return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(m0, r0), m1, r1);
  else
    return widen16<D>(_mm256_mask_loadu_epi16(_mm256_maskz_loadu_epi16(m0, r0), m1, r1));
}

// merge2 over float32 scratch rows r0, r1 with the groups of lp.
inline __m512 merge_pair(const LanePair& lp, const float* r0, const float* r1) {
  return merge2<DType::kF32>(lp.mask[0], r0, lp.mask[1], r1);
}

// As interpolate_rows (same rows, same bits), channels last; needs cl.usable. Per destination
// row p1: the w sums of each new source row into a ring (as interpolate_rows keeps, one slot per
// source row and frame), the h sums of every source frame, then the t sums of every destination
// frame, written straight to the destination with streaming stores in whole 64-byte lines (no
// staging copy) where the row is 64-byte aligned. Each stage runs phase by phase, so a phase's
// groups, masks and weights stay in registers over its vectors v = u, u + P, ...
template <DType D, bool kAdjoint>
void interpolate_rows_cl(const typename Storage<D>::T* __restrict__ src,
                         typename Storage<D>::T* __restrict__ dst, const Geometry& g,
                         const InterpolationPlan& plan, const ChannelsLastPlan& cl, int64_t n,
                         int64_t row_begin, int64_t row_end) {
  using T = typename Storage<D>::T;
  constexpr int64_t V = 64 / (kLanes * sizeof(T));  // vectors per 64-byte line of storage
  const int64_t* se = kAdjoint ? g.out : g.in;
  const int64_t* de = kAdjoint ? g.in : g.out;
  const int64_t C = g.c, P = cl.phases, lanes = P * kLanes;
  const int64_t len = de[2] * C, src_len = se[2] * C;     // elements of a destination, source row
  const int64_t lines = (len + V * kLanes - 1) / (V * kLanes), rl = lines * V * kLanes;
  const int64_t R = plan.ring, slots = se[0] * R;
  const T* sample = src + n * se[0] * se[1] * src_len;
  thread_local std::vector<float> ring_buf, h_buf;
  thread_local std::vector<int64_t> tag_buf;
  float* ring = scratch(ring_buf, slots * rl);  // (frame, slot, rl) w sums
  int64_t* tag = scratch(tag_buf, slots);
  std::fill(tag, tag + slots, int64_t{-1});
  float* h_sums = scratch(h_buf, se[0] * rl);  // (frame, rl)
  const __m512 zero = _mm512_setzero_ps(), nan = _mm512_set1_ps(NAN);
  // Vectors [v_in, v_out) read no w corner outside the source row: no range masks there.
  const int64_t v_in = (std::max<int64_t>(0, -cl.w_lo * C) + kLanes - 1) / kLanes;
  const int64_t v_out = std::max(v_in, std::min(len, src_len - cl.w_hi * C) / kLanes);
  RowPrefetcher ahead;
  for (int64_t p1 = row_begin; p1 < row_end; ++p1) {
    ahead.clear();
    if (p1 + 1 < de[1])
      for (int64_t h = std::max(plan.h_hi[p1] + 1, plan.h_lo[p1 + 1]); h <= plan.h_hi[p1 + 1]; ++h)
        for (int64_t t = 0; t < se[0]; ++t)
          ahead.queue(sample + (t * se[1] + h) * src_len, src_len * sizeof(T));
    // One prefetch every few h vectors and t lines: finer than a burst per frame, which timed
    // slower at the paper shape (f32 and bf16; KERNEL_NOTES v9).
    ahead.spread(se[0] * rl / kLanes + de[0] * lines);
    for (int64_t t = 0; t < se[0]; ++t) {
      for (int64_t h = plan.h_lo[p1]; h <= plan.h_hi[p1]; ++h) {
        const int64_t s = t * R + plan.slot[h];
        if (tag[s] == h) continue;
        tag[s] = h;
        const T* x = sample + (t * se[1] + h) * src_len;
        float* a = ring + s * rl;
        for (int64_t u = 0; u < P; ++u) {
          const LanePair k0 = cl.w[2 * u], k1 = cl.w[2 * u + 1];
          const __m512 ww0 = _mm512_loadu_ps(&cl.w_weight[u * kLanes]);
          const __m512 ww1 = _mm512_loadu_ps(&cl.w_weight[lanes + u * kLanes]);
          const int64_t o00 = k0.value[0] * C, o01 = k0.value[1] * C;
          const int64_t o10 = k1.value[0] * C, o11 = k1.value[1] * C;
          auto w_sum = [&](int64_t e, auto at_edge) {
            __mmask16 m00 = k0.mask[0], m01 = k0.mask[1], m10 = k1.mask[0], m11 = k1.mask[1];
            if constexpr (decltype(at_edge)::value) {  // lanes whose source pixel lies outside
              m00 &= range_mask(e + o00, 0, src_len);
              m01 &= range_mask(e + o01, 0, src_len);
              m10 &= range_mask(e + o10, 0, src_len);
              m11 &= range_mask(e + o11, 0, src_len);
            }
            const __m512 v0 = merge2<D>(m00, x + e + o00, m01, x + e + o01);
            const __m512 v1 = merge2<D>(m10, x + e + o10, m11, x + e + o11);
            _mm512_store_ps(a + e, _mm512_add_ps(_mm512_mul_ps(ww0, v0), _mm512_mul_ps(ww1, v1)));
          };
          for (int64_t e = u * kLanes; e < rl; e += lanes) {
            const int64_t vec = e / kLanes;
            if (vec >= v_in && vec < v_out)
              w_sum(e, std::false_type{});
            else
              w_sum(e, std::true_type{});
          }
        }
      }
      float* out = h_sums + t * rl;
      auto slot = [&](int64_t h) { return ring + (t * R + plan.slot[h]) * rl; };
      for (int64_t u = 0; u < P; ++u) {
        const LanePair j0 = cl.h[(p1 * P + u) * 2], j1 = cl.h[(p1 * P + u) * 2 + 1];
        const float *r00 = slot(j0.value[0]), *r01 = slot(j0.value[1]);
        const float *r10 = slot(j1.value[0]), *r11 = slot(j1.value[1]);
        const float* hw = &cl.h_weight[p1 * 2 * lanes + u * kLanes];
        const __m512 w0 = _mm512_loadu_ps(hw), w1 = _mm512_loadu_ps(hw + lanes);
        for (int64_t e = u * kLanes; e < rl; e += lanes) {
          ahead.tick();
          const __m512 u0 = merge_pair(j0, r00 + e, r01 + e), u1 = merge_pair(j1, r10 + e, r11 + e);
          _mm512_store_ps(out + e, _mm512_add_ps(_mm512_mul_ps(w0, u0), _mm512_mul_ps(w1, u1)));
        }
      }
    }
    // t sums, a 64-byte line (V vectors) at a time; line phases repeat every P / gcd(P, V) lines.
    const int64_t line_phases = P / std::gcd(P, V);
    for (int64_t p0 = 0; p0 < de[0]; ++p0) {
      T* row = dst + ((n * de[0] + p0) * de[1] + p1) * len;
      const bool aligned = reinterpret_cast<uintptr_t>(row) % 64 == 0;
      for (int64_t k = 0; k < line_phases; ++k) {
        LanePair i0[V], i1[V];
        __m512 w0[V], w1[V];
        __mmask16 bad[V];
        for (int64_t j = 0; j < V; ++j) {
          const int64_t u = (k * V + j) % P;
          i0[j] = cl.t[(p0 * P + u) * 2];
          i1[j] = cl.t[(p0 * P + u) * 2 + 1];
          const float* tw = &cl.t_weight[p0 * 2 * lanes + u * kLanes];
          w0[j] = _mm512_loadu_ps(tw);
          w1[j] = _mm512_loadu_ps(tw + lanes);
          bad[j] = cl.not_finite[u];
        }
        auto t_sum = [&](int64_t j, int64_t e) {
          const __m512 u0 = merge_pair(i0[j], h_sums + i0[j].value[0] * rl + e,
                                       h_sums + i0[j].value[1] * rl + e);
          const __m512 u1 = merge_pair(i1[j], h_sums + i1[j].value[0] * rl + e,
                                       h_sums + i1[j].value[1] * rl + e);
          const __m512 sum = _mm512_add_ps(_mm512_mul_ps(w0[j], u0), _mm512_mul_ps(w1[j], u1));
          return _mm512_add_ps(_mm512_mask_mov_ps(sum, bad[j], nan), zero);
        };
        for (int64_t e = k * V * kLanes; e < rl; e += line_phases * V * kLanes) {
          ahead.tick();
          if (aligned && e + V * kLanes <= len) {
            if constexpr (V == 1)
              _mm512_stream_ps(row + e, t_sum(0, e));
            else
              _mm512_stream_si512(reinterpret_cast<__m512i*>(row + e),
                                  narrow_line<D>(t_sum(0, e), t_sum(1, e + kLanes)));
          } else {
            for (int64_t j = 0; j < V && e + j * kLanes < len; ++j)
              store16<D>(row + e + j * kLanes, range_mask(e + j * kLanes, 0, len),
                         t_sum(j, e + j * kLanes));
          }
        }
      }
    }
  }
  _mm_sfence();  // the streamed lines are visible before the task reports itself done
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
