// The AVX2 kernels (8 float32 lanes): the vector operations rubiks_shift_cpu_simd_kernels.h needs,
// then those kernels, in namespace rubiks::simd::avx2 and compiled for AVX2, FMA and F16C (run only
// where cpu_simd_best() found them and no AVX-512).
//
// AVX2 has no mask registers and no 16-bit masked loads or stores. A mask is a byte (bit l for
// lane l), widened to a vector of all-ones lanes where a masked operation needs one. Masked float32
// loads and stores are vmaskmovps (masked lanes are not read or written). For bfloat16 and float16,
// a vector whose lanes are all readable is loaded whole and its lanes of neither group cleared
// (merge2 with kWhole: the interior of a row, and every scratch row); a partial vector at a row's
// edge goes lane by lane.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX2_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX2_H_

#include "rubiks_shift_cpu_simd.h"

namespace rubiks {
namespace simd {

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace avx2 {

constexpr int64_t kLanes = 8;
using Vec = __m256;
using Mask = uint8_t;
constexpr Mask kAllLanes = 0xff;

// Lane l all ones where bit l of m is set, else 0: 32-bit lanes, and 16-bit lanes.
inline __m256i lanes32(Mask m) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m), bit), bit);
}
inline __m128i lanes16(Mask m) {
  const __m128i bit = _mm_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm_cmpeq_epi16(_mm_and_si128(_mm_set1_epi16(m), bit), bit);
}

inline Vec setzero() { return _mm256_setzero_ps(); }
inline Vec set1(float v) { return _mm256_set1_ps(v); }
inline Vec loadu(const float* p) { return _mm256_loadu_ps(p); }
inline void storeu(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
// Lanes of m from a, the others from b.
inline Vec select(Mask m, Vec a, Vec b) {
  return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(lanes32(m)));
}
// A fixed tree: the two halves, then pairs, then the last two.
inline float reduce_add(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 storage elements <-> 8 float32 lanes. The conversions round as Storage<D> does (bfloat16 by
// the same integer steps; float16 by the F16C instruction, to nearest even: equal to f32_to_f16
// except NaN payloads), as the AVX-512 kernels do.
template <DType D>
inline Vec widen(__m128i h) {  // 8 bfloat16 or float16 -> float32, exact
  if constexpr (D == DType::kBF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  else
    return _mm256_cvtph_ps(h);
}

// bfloat16: the rounded value in the upper 16 bits of each 32-bit lane (lower bits arbitrary).
// NaN keeps its upper bits with the quiet bit set; everything else rounds to nearest even.
inline __m256i round_bf16_high(Vec v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
}

template <DType D>
inline __m128i narrow(Vec v) {  // 8 float32 -> 8 bfloat16 or float16
  if constexpr (D == DType::kBF16) {
    const __m256i high = _mm256_srli_epi32(round_bf16_high(v), 16);  // 0 .. 0xffff: packs exactly
    return _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
  } else {
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
}

// Masked lanes are neither read nor written; a masked load gives +0.
template <DType D>
inline Vec load_lanes(const typename Storage<D>::T* p, Mask m) {
  if constexpr (D == DType::kF32) {
    return _mm256_maskload_ps(p, lanes32(m));
  } else {
    if (m == kAllLanes) return widen<D>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    alignas(16) uint16_t lane[kLanes];
    for (int l = 0; l < kLanes; ++l) lane[l] = (m >> l) & 1 ? p[l] : 0;
    return widen<D>(_mm_load_si128(reinterpret_cast<const __m128i*>(lane)));
  }
}

template <DType D>
inline void store_lanes(typename Storage<D>::T* p, Mask m, Vec v) {
  if constexpr (D == DType::kF32) {
    if (m == kAllLanes)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, lanes32(m), v);
  } else {
    const __m128i h = narrow<D>(v);
    if (m == kAllLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
      return;
    }
    alignas(16) uint16_t lane[kLanes];
    _mm_store_si128(reinterpret_cast<__m128i*>(lane), h);
    for (int l = 0; l < kLanes; ++l)
      if ((m >> l) & 1) p[l] = lane[l];
  }
}

// The vector whose lanes of m0 come from r0 and lanes of m1 from r1 (storage of type D, widened
// to float32 once, after the merge); lanes of neither mask are +0. kWhole: every lane of both
// reads is readable memory (loaded whole, then masked); otherwise masked lanes are not read.
template <DType D, bool kWhole>
inline Vec merge2(Mask m0, const typename Storage<D>::T* r0, Mask m1,
                  const typename Storage<D>::T* r1) {
  if constexpr (D == DType::kF32) {
    if constexpr (kWhole)  // the groups are disjoint: pick by m1, then clear the lanes of neither
      return _mm256_and_ps(_mm256_blendv_ps(_mm256_loadu_ps(r0), _mm256_loadu_ps(r1),
                                            _mm256_castsi256_ps(lanes32(m1))),
                           _mm256_castsi256_ps(lanes32(m0 | m1)));
    else
      return _mm256_or_ps(_mm256_maskload_ps(r0, lanes32(m0)), _mm256_maskload_ps(r1, lanes32(m1)));
  } else {
    if constexpr (kWhole) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1));
      return widen<D>(_mm_and_si128(_mm_blendv_epi8(a, b, lanes16(m1)), lanes16(m0 | m1)));
    } else {
      alignas(16) uint16_t lane[kLanes];
      for (int l = 0; l < kLanes; ++l)
        lane[l] = (m0 >> l) & 1 ? r0[l] : (m1 >> l) & 1 ? r1[l] : 0;
      return widen<D>(_mm_load_si128(reinterpret_cast<const __m128i*>(lane)));
    }
  }
}

// In-register transpose of an 8 x 8 float32 block: lane j of r[i] <- lane i of r[j].
inline void transpose(Vec (&r)[8]) {
  Vec t[8], q[8];
  for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved within each 128-bit half
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // 4 x 4 blocks within each half
    q[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    q[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    q[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    q[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {  // the halves: rows 0-3 take the low halves, 4-7 the high ones
    r[i] = _mm256_permute2f128_ps(q[i], q[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(q[i], q[i + 4], 0x31);
  }
}

// One 64-byte line of storage (V = 64 / (8 * sizeof(T)) vectors, lo first) to a 64-byte aligned
// p, with streaming stores (kStream) or plain ones.
template <DType D, bool kStream>
inline void store_line(typename Storage<D>::T* p, const Vec* v) {
  if constexpr (D == DType::kF32) {
    for (int i = 0; i < 2; ++i) {
      if constexpr (kStream)
        _mm256_stream_ps(p + i * kLanes, v[i]);
      else
        _mm256_store_ps(p + i * kLanes, v[i]);
    }
  } else {
    for (int i = 0; i < 2; ++i) {
      __m256i* at = reinterpret_cast<__m256i*>(p + 2 * i * kLanes);
      const __m256i half = _mm256_set_m128i(narrow<D>(v[2 * i + 1]), narrow<D>(v[2 * i]));
      if constexpr (kStream)
        _mm256_stream_si256(at, half);
      else
        _mm256_store_si256(at, half);
    }
  }
}

// 64 bytes from src to the 64-byte aligned dst, with streaming stores.
inline void stream_bytes64(void* dst, const void* src) {
  const __m256i* s = reinterpret_cast<const __m256i*>(src);
  __m256i* d = reinterpret_cast<__m256i*>(dst);
  _mm256_stream_si256(d, _mm256_loadu_si256(s));
  _mm256_stream_si256(d + 1, _mm256_loadu_si256(s + 1));
}

#include "rubiks_shift_cpu_simd_kernels.h"

}  // namespace avx2

#pragma GCC pop_options

}  // namespace simd
}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_AVX2_H_
