// Vectorised CPU kernels of the RubiksShift op (forward and input gradient at w stride 1, shift
// gradient at w stride 1), chosen at run time by the CPU's instruction set: AVX-512 (16 lanes,
// rubiks_shift_cpu_avx512.h) where the CPU has AVX-512 F/BW/VL/DQ, else AVX2 (8 lanes,
// rubiks_shift_cpu_avx2.h) where it has AVX2, FMA and F16C; elsewhere the scalar row kernels of
// rubiks_shift_math.h run. Both vector widths run one source, rubiks_shift_cpu_simd_kernels.h; this
// file holds the run-time choice and the helpers that do not depend on the width. Included by
// rubiks_shift_cpu.cc (through the two ISA headers) and cpu_module.cc (the switches).
//
// Why a transpose: channels are the minor axis of x, and every channel reads its own integer
// offset, so vectorising across channels turns each corner load into a gather. Along w, one
// channel's corners are the same contiguous run shifted by that channel's offset, so this kernel
// works on per-channel rows: it transposes the source frames of a sample, (H rows) x (W, C), into
// (H rows) x (C, W) float32 rows in a per-thread buffer (from cache, read by the 8 corners of every
// point), interpolates kLanes destination columns per instruction with masked unaligned loads (a
// masked lane reads nothing and gives 0), and transposes each finished destination row back to
// (W, C).
//
// Where every vector reads at most two sources per corner (shifts within (-1, 1) always do),
// interpolate_rows_cl needs no transpose: a vector is kLanes consecutive elements of a (W, C) row,
// and each distinct source of a (vector phase, corner) is merged in by one masked load
// (ChannelsLastPlan).
//
// Same bits as the scalar kernels: every lane runs interpolate_point's operations in its order
// (multiply, then add, each rounded; no FMA), and a corner is skipped where the scalar kernel skips
// it for the whole row (t/h corner absent or of weight 0, w corner of weight 0). A w corner outside
// the source, which the scalar kernel drops by a select, adds the product of its finite weight and
// 0 here: +-0, which leaves every accumulator as it is (an accumulator starts at +0 and a sum is -0
// only when both terms are, so it is never -0). The shift gradient sums in lanes (and uses FMA), so
// its bits depend on the vector width.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "rubiks_shift_math.h"

namespace rubiks {

// The vector instruction sets of the CPU kernels, in order: a level runs where the CPU has it.
enum class SimdIsa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The best level this CPU supports.
inline SimdIsa cpu_simd_best() {
  static const SimdIsa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return SimdIsa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
      return SimdIsa::kAvx2;
    return SimdIsa::kScalar;
  }();
  return best;
}

// The highest level the handlers may use: RUBIKS_JAX_CPU_SIMD=0 (scalar), =avx2, or unset (the
// best); set_cpu_simd changes it (A/B measurements, and tests of every level on one machine).
inline std::atomic<int>& cpu_simd_cap() {
  static std::atomic<int> cap = [] {
    const char* env = std::getenv("RUBIKS_JAX_CPU_SIMD");
    if (env != nullptr && std::strcmp(env, "0") == 0) return static_cast<int>(SimdIsa::kScalar);
    if (env != nullptr && std::strcmp(env, "avx2") == 0) return static_cast<int>(SimdIsa::kAvx2);
    return static_cast<int>(SimdIsa::kAvx512);
  }();
  return cap;
}

// The level the handlers use now.
inline SimdIsa cpu_simd_isa() {
  return static_cast<SimdIsa>(std::min(static_cast<int>(cpu_simd_best()), cpu_simd_cap().load()));
}

// Caps the level at `cap` (0 scalar, 1 AVX2, 2 AVX-512); returns the level used after the call.
inline int set_cpu_simd(int cap) {
  cpu_simd_cap().store(std::clamp(cap, 0, static_cast<int>(SimdIsa::kAvx512)));
  return static_cast<int>(cpu_simd_isa());
}

// Whether the vectorised forward and input gradient run channels last (interpolate_rows_cl) where
// every (vector phase, corner) has at most two sources, the transposing kernel (interpolate_rows)
// elsewhere; off: always the transposing one. Both give the same bits; the switch is for A/B
// measurements and for testing both kernels on one machine.
inline std::atomic<bool>& cpu_channels_last_switch() {
  static std::atomic<bool> on{true};
  return on;
}

inline void set_cpu_channels_last(bool on) { cpu_channels_last_switch().store(on); }

// The vectorised forward and input gradient write their output with streaming stores when it has
// at least this many bytes, with plain stores below: a small output stays in the cache for the op
// that reads it next, while a large one would only evict it (KERNEL_NOTES "v11"). Same bits either
// way; settable for A/B measurements and for testing both paths.
inline constexpr int64_t kDefaultStreamMinBytes = int64_t{4} << 20;  // 4 MiB
inline std::atomic<int64_t>& cpu_stream_min_bytes() {
  static std::atomic<int64_t> bytes{kDefaultStreamMinBytes};
  return bytes;
}

// Calls that ran interpolate_rows_cl: the tests read it to know which kernel a case reached.
inline std::atomic<int64_t>& cpu_channels_last_calls() {
  static std::atomic<int64_t> calls{0};
  return calls;
}

namespace simd {

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

// One corner pair of an axis for one channel: the source index of each corner and its weight. A
// corner the scalar kernel skips (outside, or of weight 0) has index -1 and weight 0: it is then
// read from a row of zeros, and 0 * 0 adds +0, which changes no sum (see the top of this file).
struct CornerPair {
  int64_t index[2];
  float weight[2];
};

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

}  // namespace simd
}  // namespace rubiks

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_CPU_SIMD_H_
