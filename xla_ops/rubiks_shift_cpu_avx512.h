// The AVX-512 kernels (16 float32 lanes): the vector operations rubiks_shift_cpu_simd_kernels.h
// needs, then those kernels, in namespace rubiks::simd::avx512 and compiled for AVX-512 F/BW/VL/DQ
// (run only where cpu_simd_best() found them).
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX512_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX512_H_

#include "rubiks_shift_cpu_simd.h"

namespace rubiks {
namespace simd {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")

namespace avx512 {

constexpr int64_t kLanes = 16;
using Vec = __m512;
using Mask = __mmask16;

inline Vec setzero() { return _mm512_setzero_ps(); }
inline Vec set1(float v) { return _mm512_set1_ps(v); }
inline Vec loadu(const float* p) { return _mm512_loadu_ps(p); }
inline void storeu(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
// Lanes of m from a, the others from b.
inline Vec select(Mask m, Vec a, Vec b) { return _mm512_mask_mov_ps(b, m, a); }
inline float reduce_add(Vec v) { return _mm512_reduce_add_ps(v); }

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
inline __m512 load_lanes(const typename Storage<D>::T* p, Mask m) {
  if constexpr (D == DType::kF32)
    return _mm512_maskz_loadu_ps(m, p);
  else
    return widen16<D>(_mm256_maskz_loadu_epi16(m, p));
}

template <DType D>
inline void store_lanes(typename Storage<D>::T* p, Mask m, __m512 v) {
  if constexpr (D == DType::kF32)
    _mm512_mask_storeu_ps(p, m, v);
  else
    _mm256_mask_storeu_epi16(p, m, narrow16<D>(v));
}

// In-register transpose of a 16 x 16 float32 block: lane j of r[i] <- lane i of r[j].
inline void transpose(__m512 (&r)[16]) {
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


// The vector whose lanes of m0 come from r0 and lanes of m1 from r1 (storage of type D, widened
// to float32 once, after the merge); lanes of neither mask are +0, and are not read. (kWhole: the
// caller knows every lane of both reads is readable; masked loads cost the same here.)
template <DType D, bool kWhole>
inline __m512 merge2(Mask m0, const typename Storage<D>::T* r0, Mask m1,
                     const typename Storage<D>::T* r1) {
  if constexpr (D == DType::kF32)
    return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(m0, r0), m1, r1);
  else
    return widen16<D>(_mm256_mask_loadu_epi16(_mm256_maskz_loadu_epi16(m0, r0), m1, r1));
}

// One 64-byte line of storage (V = 64 / (16 * sizeof(T)) vectors, lo first) to a 64-byte aligned
// p, with a streaming store (kStream) or a plain one.
template <DType D, bool kStream>
inline void store_line(typename Storage<D>::T* p, const __m512* v) {
  if constexpr (D == DType::kF32) {
    if constexpr (kStream)
      _mm512_stream_ps(p, v[0]);
    else
      _mm512_store_ps(p, v[0]);
  } else {
    const __m512i line = narrow_line<D>(v[0], v[1]);
    if constexpr (kStream)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(p), line);
    else
      _mm512_store_si512(p, line);
  }
}

// 64 bytes from src to the 64-byte aligned dst, with a streaming store.
inline void stream_bytes64(void* dst, const void* src) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), _mm512_loadu_si512(src));
}

#include "rubiks_shift_cpu_simd_kernels.h"

}  // namespace avx512

#pragma GCC pop_options

}  // namespace simd
}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX512_H_
