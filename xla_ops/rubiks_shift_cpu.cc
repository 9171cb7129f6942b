// CPU kernels of the RubiksShift op: forward, input gradient, shift gradient. The arithmetic is the
// row functions of rubiks_shift_math.h (shared with the CUDA kernels, so both give the same bits);
// this file splits the rows into contiguous blocks spread over XLA's intra-op thread pool, and each
// handler returns an ffi::Future that completes when the last block is done.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "rubiks_shift_cpu_avx2.h"
#include "rubiks_shift_cpu_avx512.h"
#include "rubiks_shift_cpu_simd.h"
#include "rubiks_shift_ffi.h"
#include "rubiks_shift_kernels.h"
#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {
namespace {

// Runs body(begin, end) over [0, n) in blocks on the pool, then `finish` once on the thread that
// ends the last block. Blocks are at least `grain` long; small problems run inline.
template <typename Body, typename Finish>
ffi::Future parallel_for(ffi::ThreadPool& pool, int64_t n, int64_t grain, Body body,
                         Finish finish) {
  ffi::Promise promise;
  ffi::Future future(promise);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t blocks = std::max<int64_t>(1, std::min((n + grain - 1) / grain, threads * 4));
  if (blocks == 1) {
    body(0, n);
    finish();
    promise.SetAvailable();
    return future;
  }
  auto remaining = std::make_shared<std::atomic<int64_t>>(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = n * b / blocks, end = n * (b + 1) / blocks;
    pool.Schedule([=]() mutable {
      body(begin, end);
      if (remaining->fetch_sub(1, std::memory_order_acq_rel) == 1) {
        finish();
        promise.SetAvailable();
      }
    });
  }
  return future;
}

// Calls f(K{}), K the simd::<isa>::Kernels of the vector width in use, and returns true; false
// where the scalar kernels run.
template <typename F>
bool with_simd_kernels(F&& f) {
  switch (cpu_simd_isa()) {
    case SimdIsa::kAvx512:
      f(simd::avx512::Kernels{});
      return true;
    case SimdIsa::kAvx2:
      f(simd::avx2::Kernels{});
      return true;
    case SimdIsa::kScalar:
      break;
  }
  return false;
}

ffi::Future ready(ffi::Error error) {
  ffi::Promise promise;
  ffi::Future future(promise);
  if (error.success())
    promise.SetAvailable();
  else
    promise.SetError(std::move(error));
  return future;
}

std::shared_ptr<std::vector<ChannelShift>> channel_shifts(const float* shift, int64_t c,
                                                          bool quantize) {
  auto out = std::make_shared<std::vector<ChannelShift>>(c);
  for (int64_t i = 0; i < c; ++i) (*out)[i] = channel_shift(shift + 3 * i, quantize);
  return out;
}

// Forward (kAdjoint = false: y from x) and input gradient (kAdjoint = true: dx from dy) share the
// loop: every destination point is an 8-corner weighted sum of the source.
template <bool kAdjoint>
ffi::Future interpolate(const char* op, ffi::ThreadPool pool, ffi::AnyBuffer src,
                        ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::AnyBuffer> dst, int64_t st,
                        int64_t sh, int64_t sw, int64_t pt, int64_t ph, int64_t pw,
                        bool quantize) {
  Geometry g;
  if (auto err = interpolation_geometry<kAdjoint>(op, src, *dst, shift.dimensions(), st, sh, sw, pt,
                                                  ph, pw, &g);
      !err.success())
    return ready(std::move(err));
  // Copied by value: the tasks outlive this stack frame (the handler returns a Future).
  const int64_t e0 = kAdjoint ? g.in[0] : g.out[0], e1 = kAdjoint ? g.in[1] : g.out[1],
                e2 = kAdjoint ? g.in[2] : g.out[2];
  const int64_t rows = g.n * e0 * e1;
  const int64_t row_len = e2 * g.c;
  if (rows == 0 || row_len == 0) return ready(ffi::Error::Success());
  auto cs = channel_shifts(shift.typed_data(), g.c, quantize);
  ffi::Future result = ready(ffi::Error::Success());
  ffi::Error err = dispatch_dtype(src.element_type(), op, [&]<DType D>() {
    using T = typename Storage<D>::T;
    const T* in = reinterpret_cast<const T*>(src.untyped_data());
    T* out = reinterpret_cast<T*>(dst->untyped_data());
    auto body = [=](int64_t begin, int64_t end) {
      const ChannelShift* shifts = cs->data();
      // 64-bit offsets on the host: x86-64 addresses with 64-bit indices, and 32-bit ones would
      // cost a sign extension per load (measured 7-15% slower at the paper shape).
      with_interpolation_variant(g, /*force_64bit=*/true, [&]<bool kUnitW, typename I>() {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t p1 = r % e1;
          const int64_t p0 = (r / e1) % e0;
          const int64_t n = r / (e0 * e1);
          for (int64_t c = 0; c < g.c; ++c)
            interpolate_row<D, kAdjoint, kUnitW, I>(in, out + r * row_len + c, g, shifts[c], n,
                                                    p0, p1, c, 0, e2);
        }
      });
    };
    if (g.stride[2] == 1 && with_simd_kernels([&](auto kernels) {
          using K = decltype(kernels);
          // Tasks are blocks of destination rows of one sample; a sample is split only when there
          // are fewer samples than tasks the pool can use (each block re-forms a few source rows).
          auto plan = std::make_shared<typename K::Plan>(K::template plan<kAdjoint>(g, cs->data()));
          auto cl = std::make_shared<typename K::ClPlan>(K::plan_cl(g, *plan, kAdjoint));
          const bool use_cl = cl->usable && cpu_channels_last_switch().load();
          if (use_cl) cpu_channels_last_calls().fetch_add(1);
          const bool stream =
              static_cast<int64_t>(dst->size_bytes()) >= cpu_stream_min_bytes().load();
          const int64_t wanted = std::max<int64_t>(1, pool.num_threads()) * 4;
          const int64_t blocks = std::clamp<int64_t>((wanted + g.n - 1) / g.n, 1, e1);
          auto tasks = [=](int64_t begin, int64_t end) {
            for (int64_t task = begin; task < end; ++task) {
              const int64_t n = task / blocks, b = task % blocks;
              K::template rows<D, kAdjoint>(in, out, g, *plan, use_cl ? cl.get() : nullptr, n,
                                            e1 * b / blocks, e1 * (b + 1) / blocks, stream);
            }
          };
          const int64_t grain = std::max<int64_t>(1, (1 << 16) / (row_len * e1 * e0 / blocks + 1));
          result = parallel_for(pool, g.n * blocks, grain, tasks, [cs, plan, cl] {});
        }))
      return ffi::Error::Success();
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / row_len);
    result = parallel_for(pool, rows, grain, body, [cs] {});
    return ffi::Error::Success();
  });
  if (!err.success()) return ready(std::move(err));
  return result;
}

ffi::Future Forward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Buffer<ffi::F32> shift,
                    ffi::Result<ffi::AnyBuffer> y, int64_t st, int64_t sh, int64_t sw, int64_t pt,
                    int64_t ph, int64_t pw, bool quantize) {
  return interpolate<false>(kForwardTarget, pool, x, shift, y, st, sh, sw, pt, ph, pw, quantize);
}

ffi::Future GradInput(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> shift,
                      ffi::Result<ffi::AnyBuffer> dx, int64_t st, int64_t sh, int64_t sw,
                      int64_t pt, int64_t ph, int64_t pw, bool quantize) {
  return interpolate<true>(kGradInputTarget, pool, dy, shift, dx, st, sh, sw, pt, ph, pw,
                           quantize);
}

// dshift = sum over (n, to, ho, wo) of dy * dy/dshift, in the two passes of rubiks_shift_math.h:
// chunk p of the P point chunks writes its sums to partials[p] (P comes from the partials buffer,
// which Python sizes from the shape), then the thread that ends last sums the chunks with the CUDA
// kernels' pass 2 (reduce_partials_on_host). Bit-reproducible, and the GPU's bits.
ffi::Future GradShift(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                      ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::Buffer<ffi::F32>> dshift,
                      ffi::Result<ffi::Buffer<ffi::F32>> partials, int64_t st, int64_t sh,
                      int64_t sw, int64_t pt, int64_t ph, int64_t pw) {
  Geometry g;
  if (auto err = grad_shift_geometry(x, dy, shift.dimensions(), dshift->dimensions(),
                                     partials->dimensions(), st, sh, sw, pt, ph, pw, &g);
      !err.success())
    return ready(std::move(err));
  const int64_t chunks = partials->dimensions()[0];
  const int64_t points = g.n * g.out[0] * g.out[1] * g.out[2];
  auto cs = channel_shifts(shift.typed_data(), g.c, /*quantize=*/false);
  float* part = partials->typed_data();
  float* out = dshift->typed_data();
  const int64_t c3 = g.c * 3;
  ffi::Future result = ready(ffi::Error::Success());
  ffi::Error err = ffi::Error::Success();
  if (g.stride[2] == 1 && with_simd_kernels([&](auto kernels) {
        using K = decltype(kernels);
        // Tasks are runs of (n, output row) units, as many as the shape allows up to
        // kGradShiftTasks (never more than the partials buffer holds); each sums its units into
        // its own row of partials, and the last task sums the rows in task order: the result
        // depends on the shape (and the vector width) alone, not on the thread count.
        constexpr int64_t kGradShiftTasks = 16;
        const int64_t units = g.n * g.out[1];
        const int64_t tasks = std::clamp<int64_t>(std::min(chunks, kGradShiftTasks), 1,
                                                  std::max<int64_t>(units, 1));
        auto plan = std::make_shared<typename K::Plan>(
            K::template plan</*kAdjoint=*/false, /*kWeighted=*/false>(g, cs->data()));
        auto finish = [=] {
          for (int64_t i = 0; i < c3; ++i) {
            float sum = 0.f;
            for (int64_t k = 0; k < tasks; ++k) sum += part[k * c3 + i];
            out[i] = (*cs)[i / 3].finite ? sum : NAN;
          }
        };
        err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
          using T = typename Storage<D>::T;
          const T* xs = reinterpret_cast<const T*>(x.untyped_data());
          const T* dys = reinterpret_cast<const T*>(dy.untyped_data());
          auto body = [=](int64_t begin, int64_t end) {
            thread_local std::vector<float> acc_buf;
            float* acc = simd::scratch(acc_buf, c3 * K::lanes);
            for (int64_t k = begin; k < end; ++k) {
              std::fill(acc, acc + c3 * K::lanes, 0.f);
              // Units [u0, u1) of task k, one run per sample.
              for (int64_t u = units * k / tasks, u1 = units * (k + 1) / tasks; u < u1;) {
                const int64_t n = u / g.out[1], p1 = u % g.out[1];
                const int64_t stop = std::min(u1 - n * g.out[1], g.out[1]);
                K::template shift_grad<D>(xs, dys, g, *plan, n, p1, stop, acc);
                u = n * g.out[1] + stop;
              }
              K::reduce(acc, part + k * c3, c3);
            }
          };
          result = parallel_for(pool, tasks, 1, body, finish);
          return ffi::Error::Success();
        });
      })) {
    if (!err.success()) return ready(std::move(err));
    return result;
  }
  auto finish = [=] { reduce_partials_on_host(part, out, chunks, c3); };
  err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    const T* xs = reinterpret_cast<const T*>(x.untyped_data());
    const T* dys = reinterpret_cast<const T*>(dy.untyped_data());
    auto body = [=](int64_t chunk_lo, int64_t chunk_hi) {
      const ChannelShift* shifts = cs->data();
      with_index_type(g, /*force_64bit=*/true, [&]<typename I>() {  // as in interpolate
        for (int64_t p = chunk_lo; p < chunk_hi; ++p) {
          const int64_t begin = chunk_begin(points, chunks, p);
          const int64_t end = chunk_begin(points, chunks, p + 1);
          for (int64_t c = 0; c < g.c; ++c) {
            float acc[3] = {0.f, 0.f, 0.f};
            shift_grad_points<D, I>(xs, dys, g, shifts[c], begin, end, c, acc);
            for (int a = 0; a < 3; ++a) part[(p * g.c + c) * 3 + a] = acc[a];
          }
        }
      });
    };
    const int64_t per_chunk = std::max<int64_t>(1, points / chunks * g.c);
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / per_chunk);
    result = parallel_for(pool, chunks, grain, body, finish);
    return ffi::Error::Success();
  });
  if (!err.success()) return ready(std::move(err));
  return result;
}

// The op benchmark's memory floor on the host (not part of the op): y = -x into a separate buffer,
// as a flip of each element's sign bit, so one read of x and one write of y per element and nothing
// else, spread over the pool like the kernels. An op that writes a new tensor cannot move its bytes
// faster than this; an in-place loop can (it pays no read for ownership and keeps one tensor's worth
// of lines in the cache), so it is no floor for the op. `streaming`: non-temporal stores (the way the
// kernels write y) or plain ones; the benchmark takes the faster.
template <bool kStream>
__attribute__((target("avx512f"))) void negate_lines_avx512(const char* src, char* dst,
                                                            int64_t lines, uint64_t sign) {
  const __m512i s = _mm512_set1_epi64(static_cast<long long>(sign));
  for (int64_t i = 0; i < lines; ++i) {
    const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(src + 64 * i), s);
    if constexpr (kStream)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + 64 * i), v);
    else
      _mm512_storeu_si512(dst + 64 * i, v);
  }
}

template <bool kStream>
__attribute__((target("avx2"))) void negate_lines_avx2(const char* src, char* dst, int64_t lines,
                                                      uint64_t sign) {
  const __m256i s = _mm256_set1_epi64x(static_cast<long long>(sign));
  for (int64_t i = 0; i < 2 * lines; ++i) {
    const __m256i v =
        _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32 * i)), s);
    if constexpr (kStream)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 32 * i), v);
    else
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 32 * i), v);
  }
}

// Bytes [begin, end) of the buffers, begin a multiple of 8 (so byte b's sign mask is byte b % 8 of
// `sign`). Whole 64-byte lines go through the vector path when dst is 64-byte aligned there.
void negate_bytes(const char* src, char* dst, int64_t begin, int64_t end, uint64_t sign,
                  bool streaming) {
  const auto mask = [sign](int64_t b) { return static_cast<char>(sign >> (8 * (b % 8))); };
  int64_t b = begin;
  // The machine's best vector level, whatever cap the op's kernels run under: a floor of the
  // memory, not of the op.
  const SimdIsa isa = cpu_simd_best();
  if (isa != SimdIsa::kScalar) {
    for (; b < end && (reinterpret_cast<uintptr_t>(dst + b) % 64 != 0); ++b)
      dst[b] = src[b] ^ mask(b);
    const int64_t lines = (end - b) / 64;
    if (isa == SimdIsa::kAvx512)
      (streaming ? negate_lines_avx512<true> : negate_lines_avx512<false>)(src + b, dst + b, lines,
                                                                            sign);
    else
      (streaming ? negate_lines_avx2<true> : negate_lines_avx2<false>)(src + b, dst + b, lines,
                                                                        sign);
    if (streaming) _mm_sfence();  // the non-temporal stores are visible before the call completes
    b += 64 * lines;
  }
  for (; b < end; ++b) dst[b] = src[b] ^ mask(b);
}

ffi::Future StreamNegate(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                         bool streaming) {
  const ffi::DataType t = x.element_type();
  if (t != ffi::DataType::F32 && t != ffi::DataType::BF16 && t != ffi::DataType::F16 &&
      t != ffi::DataType::F64)
    return ready(ffi::Error::InvalidArgument(
        std::string(kStreamNegateTarget) + ": x must be float16, bfloat16, float32 or float64"));
  if (y->element_type() != t || y->size_bytes() != x.size_bytes())
    return ready(ffi::Error::InvalidArgument(std::string(kStreamNegateTarget) +
                                             ": y must have x's dtype and size"));
  const size_t item = ffi::ByteWidth(t);
  const uint64_t sign = item == 8 ? 0x8000000000000000ull
                      : item == 4 ? 0x8000000080000000ull
                                  : 0x8000800080008000ull;
  const char* src = static_cast<const char*>(x.untyped_data());
  char* dst = static_cast<char*>(y->untyped_data());
  const int64_t bytes = static_cast<int64_t>(x.size_bytes());
  // Blocks of whole lines (256 KiB at least), so each starts at a multiple of 64 bytes.
  const int64_t lines = (bytes + 63) / 64;
  return parallel_for(
      pool, lines, 4096,
      [=](int64_t begin, int64_t end) {
        negate_bytes(src, dst, 64 * begin, std::min(bytes, 64 * end), sign, streaming);
      },
      [] {});
}

}  // namespace
}  // namespace rubiks

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftForwardCpu, rubiks::Forward,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::ThreadPool>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradInputCpu, rubiks::GradInput,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::ThreadPool>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradShiftCpu, rubiks::GradShift,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::ThreadPool>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksStreamNegateCpu, rubiks::StreamNegate,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::AnyBuffer>()
                                  .Ret<xla::ffi::AnyBuffer>()
                                  .Attr<bool>("streaming"));
