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

// Row kernels. A row is one (n, t, h) line of W points; for one channel its t and h corners, their
// weights and the source row pointers are the same along the whole line, so they are computed
// once per (row, channel) and the inner loop only walks w. The arithmetic (corner order, skipped
// corners, f32 accumulation order) is exactly that of interpolate_point / shift_grad_point in
// rubiks_shift_math.h, which the CUDA kernels use per point: results are bit-identical.

// Floor and ceiling of a / b for b > 0 and any sign of a.
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Index on the w axis of corner k for destination position p (forward tap for kAdjoint = false,
// adjoint tap otherwise); -1 if none.
template <bool kAdjoint>
inline int64_t w_tap(const Geometry& g, const ChannelShift& cs, int64_t p, int k) {
  if constexpr (kAdjoint) {
    if (g.stride[2] == 1) {  // the common case: no division
      const int64_t o = p + g.pad[2] - cs.q[2] - k;
      return (o >= 0 && o < g.out[2]) ? o : -1;
    }
    return adjoint_tap(g, cs, 2, p, k);
  } else {
    return forward_tap(g, cs, 2, p, k);
  }
}

// Channel c of the source rows (n, it[i], ih[j], w = 0) of the four (t, h) corners, null where a
// corner index is -1; `extent` gives the source's (T, H, W).
template <typename T>
void source_rows(const T* src, const Geometry& g, int64_t n, const int64_t (&it)[2],
                 const int64_t (&ih)[2], const int64_t* extent, int64_t c, const T* (&rows)[2][2]) {
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      rows[i][j] =
          (it[i] < 0 || ih[j] < 0) ? nullptr : src + offset(g, n, it[i], ih[j], 0, extent) + c;
}

// Interior [lo, hi) of the output w positions whose two forward corners (input columns
// o * sw - pad + q and the one after it) both lie inside the input; `first` is the element offset
// (times C) of corner 0 at o = lo, and the offset advances by sw * C per output column.
struct WInterior {
  int64_t lo, hi, first;
};

inline WInterior forward_w_interior(const Geometry& g, const ChannelShift& cs) {
  const int64_t q = cs.q[2], pad = g.pad[2], sw = g.stride[2];
  const int64_t lo = std::max<int64_t>(0, ceil_div(pad - q, sw));
  const int64_t hi = std::min<int64_t>(g.out[2], floor_div(g.in[2] - 2 + pad - q, sw) + 1);
  return {lo, hi, (lo * sw - pad + q) * g.c};
}

// dst[p2 * C] for p2 in [0, extent of w): the destination row (n, p0, p1) of channel c (dst already
// points at channel c of the row). Forward: y from x; kAdjoint: dx from dy.
template <DType D, bool kAdjoint>
void interpolate_row(const typename Storage<D>::T* src, typename Storage<D>::T* dst,
                     const Geometry& g, const ChannelShift& cs, int64_t n, int64_t p0, int64_t p1,
                     int64_t c) {
  const int64_t* src_extent = kAdjoint ? g.out : g.in;
  const int64_t width = kAdjoint ? g.in[2] : g.out[2];
  const int64_t C = g.c;
  if (!cs.finite) {
    for (int64_t p2 = 0; p2 < width; ++p2) dst[p2 * C] = Storage<D>::store(NAN);
    return;
  }
  int64_t it[2], ih[2];
  float wt[2], wh[2], ww[2];
  bool use_w[2];
  for (int k = 0; k < 2; ++k) {
    wt[k] = corner_weight(cs.r[0], k);
    wh[k] = corner_weight(cs.r[1], k);
    ww[k] = corner_weight(cs.r[2], k);
    const auto tap = kAdjoint ? adjoint_tap : forward_tap;
    it[k] = wt[k] == 0.f ? -1 : tap(g, cs, 0, p0, k);
    ih[k] = wh[k] == 0.f ? -1 : tap(g, cs, 1, p1, k);
    use_w[k] = ww[k] != 0.f;
  }
  const typename Storage<D>::T* rows[2][2];
  source_rows(src, g, n, it, ih, src_extent, c, rows);
  // One destination point from the element offsets iw[k] of its w corners in the source rows
  // (negative: corner absent). kInterior: both present, the test is compiled out.
  auto point = [&]<bool kInterior>(const int64_t(&iw)[2]) {
    float acc = 0.f;
    for (int i = 0; i < 2; ++i) {
      if (it[i] < 0) continue;
      float acc_t = 0.f;
      for (int j = 0; j < 2; ++j) {
        if (ih[j] < 0) continue;
        float acc_h = 0.f;
        for (int k = 0; k < 2; ++k) {
          if (!kInterior && iw[k] < 0) continue;
          acc_h += ww[k] * Storage<D>::load(rows[i][j][iw[k]]);
        }
        acc_t += wh[j] * acc_h;
      }
      acc += wt[i] * acc_t;
    }
    return Storage<D>::store(acc);
  };
  auto edge = [&](int64_t begin, int64_t end) {
    for (int64_t p2 = begin; p2 < end; ++p2) {
      int64_t iw[2];
      for (int k = 0; k < 2; ++k) iw[k] = use_w[k] ? w_tap<kAdjoint>(g, cs, p2, k) * C : -1;
      dst[p2 * C] = point.template operator()<false>(iw);
    }
  };
  // Interior [lo, hi): both w corners exist (and have nonzero weight), so their offsets advance by
  // a constant step and the inner loop has no per-point tap arithmetic.
  int64_t lo = 0, hi = 0, first = 0, step = 0, next = 0;
  if (use_w[0] && use_w[1]) {
    const int64_t q = cs.q[2], pad = g.pad[2], sw = g.stride[2];
    if constexpr (kAdjoint) {
      if (sw == 1) {  // corner 0 of input p reads output p + pad - q, corner 1 the one before it
        lo = std::max<int64_t>(0, q - pad + 1);
        hi = std::min<int64_t>(width, g.out[2] + q - pad);
        first = (lo + pad - q) * C, step = C, next = -C;
      }
    } else {
      const WInterior in = forward_w_interior(g, cs);
      lo = in.lo, hi = in.hi, first = in.first, step = sw * C, next = C;
    }
  }
  if (hi <= lo) {
    edge(0, width);
    return;
  }
  edge(0, lo);
  int64_t off = first;
  for (int64_t p2 = lo; p2 < hi; ++p2, off += step) {
    const int64_t iw[2] = {off, off + next};
    dst[p2 * C] = point.template operator()<true>(iw);
  }
  edge(hi, width);
}

// Adds the shift gradient of output row (n, ot, oh), channel c, to grad[0..2], point by point in
// increasing ow (the order of shift_grad_point over the row).
template <DType D>
void shift_grad_row(const typename Storage<D>::T* x, const typename Storage<D>::T* dy,
                    const Geometry& g, const ChannelShift& cs, int64_t n, int64_t ot, int64_t oh,
                    int64_t c, float grad[3]) {
  const int64_t C = g.c;
  if (!cs.finite) {
    if (g.out[2] > 0) grad[0] = grad[1] = grad[2] = NAN;
    return;
  }
  int64_t it[2], ih[2];
  float wt[2], wh[2], ww[2];
  for (int k = 0; k < 2; ++k) {
    wt[k] = corner_weight(cs.r[0], k);
    wh[k] = corner_weight(cs.r[1], k);
    ww[k] = corner_weight(cs.r[2], k);
    it[k] = forward_tap(g, cs, 0, ot, k);
    ih[k] = forward_tap(g, cs, 1, oh, k);
  }
  const typename Storage<D>::T* rows[2][2];
  source_rows(x, g, n, it, ih, g.in, c, rows);
  const typename Storage<D>::T* dy_row = dy + offset(g, n, ot, oh, 0, g.out) + c;
  // Weights of corner (i, j, k) in the three sums, as shift_grad_point forms them ((a * b) * c,
  // then times the value): hoisted out of the w loop with the same rounding.
  float kt[2][2][2], kh[2][2][2], kw[2][2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k) {
        kt[i][j][k] = corner_dweight(i) * wh[j] * ww[k];
        kh[i][j][k] = wt[i] * corner_dweight(j) * ww[k];
        kw[i][j][k] = wt[i] * wh[j] * corner_dweight(k);
      }
  float g0 = grad[0], g1 = grad[1], g2 = grad[2];
  // One output point from the element offsets iw[k] of its w corners (negative: absent).
  // kInterior: both present, the test is compiled out.
  auto point = [&]<bool kInterior>(int64_t ow, const int64_t(&iw)[2]) {
    const float upstream = Storage<D>::load(dy_row[ow * C]);
    float gt = 0.f, gh = 0.f, gw = 0.f;
    for (int i = 0; i < 2; ++i) {
      if (it[i] < 0) continue;
      for (int j = 0; j < 2; ++j) {
        if (ih[j] < 0) continue;
        for (int k = 0; k < 2; ++k) {
          if (!kInterior && iw[k] < 0) continue;
          const float v = Storage<D>::load(rows[i][j][iw[k]]);
          gt += kt[i][j][k] * v;
          gh += kh[i][j][k] * v;
          gw += kw[i][j][k] * v;
        }
      }
    }
    g0 += upstream * gt;
    g1 += upstream * gh;
    g2 += upstream * gw;
  };
  auto edge = [&](int64_t begin, int64_t end) {
    for (int64_t ow = begin; ow < end; ++ow) {
      int64_t iw[2];  // negative when the corner is outside the input (tap -1)
      for (int k = 0; k < 2; ++k) iw[k] = w_tap<false>(g, cs, ow, k) * C;
      point.template operator()<false>(ow, iw);
    }
  };
  const WInterior in = forward_w_interior(g, cs);
  if (in.hi <= in.lo) {
    edge(0, g.out[2]);
  } else {
    edge(0, in.lo);
    int64_t off = in.first;
    for (int64_t ow = in.lo; ow < in.hi; ++ow, off += g.stride[2] * C) {
      const int64_t iw[2] = {off, off + C};
      point.template operator()<true>(ow, iw);
    }
    edge(in.hi, g.out[2]);
  }
  grad[0] = g0;
  grad[1] = g1;
  grad[2] = g2;
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
        for (int64_t c = 0; c < g.c; ++c)
          interpolate_row<D, kAdjoint>(in, out + r * row_len + c, g, shifts[c], n, p0, p1, c);
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
          for (int64_t c = 0; c < g.c; ++c)
            shift_grad_row<D>(xs, dys, g, shifts[c], n, ot, oh, c, acc + 3 * c);
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
