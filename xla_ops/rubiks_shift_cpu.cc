// CPU kernels of the RubiksShift op: forward, input gradient, shift gradient. Work is split into
// contiguous blocks of output rows and spread over XLA's intra-op thread pool; each handler returns
// an ffi::Future that completes when the last block is done.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "rubiks_shift_ffi.h"
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
  const auto in_dims = kAdjoint ? dst->dimensions() : src.dimensions();
  const auto out_dims = kAdjoint ? src.dimensions() : dst->dimensions();
  if (auto err = make_geometry(op, in_dims, out_dims, shift.dimensions(), st, sh, sw, pt, ph, pw,
                               &g);
      !err.success())
    return ready(std::move(err));
  if (src.element_type() != dst->element_type())
    return ready(ffi::Error::InvalidArgument(std::string(op) + ": input and output dtypes differ"));
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
      for (int64_t r = begin; r < end; ++r) {
        const int64_t p1 = r % e1;
        const int64_t p0 = (r / e1) % e0;
        const int64_t n = r / (e0 * e1);
        T* row = out + r * row_len;
        for (int64_t p2 = 0; p2 < e2; ++p2)
          for (int64_t c = 0; c < g.c; ++c)
            row[p2 * g.c + c] = Storage<D>::store(
                interpolate_point<D, kAdjoint>(in, g, shifts[c], n, p0, p1, p2, c));
      }
    };
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

// dshift = sum over (n, to, ho, wo) of dy * dy/dshift. Pass 1: chunk p of the P output-row chunks
// writes its partial sums to partials[p]; pass 2 (on the thread that ends last) sums the chunks in
// order. P comes from the partials buffer, which Python sizes, so the result is bit-reproducible.
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
  const int64_t rows = g.n * g.out[0] * g.out[1];
  auto cs = channel_shifts(shift.typed_data(), g.c, /*quantize=*/false);
  float* part = partials->typed_data();
  float* out = dshift->typed_data();
  const int64_t c3 = g.c * 3;
  auto finish = [=] {
    for (int64_t i = 0; i < c3; ++i) out[i] = 0.f;
    for (int64_t p = 0; p < chunks; ++p)
      for (int64_t i = 0; i < c3; ++i) out[i] += part[p * c3 + i];
  };
  ffi::Future result = ready(ffi::Error::Success());
  ffi::Error err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    const T* xs = reinterpret_cast<const T*>(x.untyped_data());
    const T* dys = reinterpret_cast<const T*>(dy.untyped_data());
    auto body = [=](int64_t chunk_lo, int64_t chunk_hi) {
      const ChannelShift* shifts = cs->data();
      for (int64_t p = chunk_lo; p < chunk_hi; ++p) {
        float* acc = part + p * c3;
        for (int64_t i = 0; i < c3; ++i) acc[i] = 0.f;
        const int64_t end = chunk_begin(rows, chunks, p + 1);
        for (int64_t r = chunk_begin(rows, chunks, p); r < end; ++r) {
          const int64_t oh = r % g.out[1];
          const int64_t ot = (r / g.out[1]) % g.out[0];
          const int64_t n = r / (g.out[0] * g.out[1]);
          for (int64_t ow = 0; ow < g.out[2]; ++ow)
            for (int64_t c = 0; c < g.c; ++c)
              shift_grad_point<D>(xs, dys, g, shifts[c], n, ot, oh, ow, c, acc + 3 * c);
        }
      }
    };
    const int64_t per_chunk = std::max<int64_t>(1, rows / chunks * g.out[2] * g.c);
    const int64_t grain = std::max<int64_t>(1, (1 << 14) / per_chunk);
    result = parallel_for(pool, chunks, grain, body, finish);
    return ffi::Error::Success();
  });
  if (!err.success()) return ready(std::move(err));
  return result;
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
