// Host-side pieces of the FFI handlers shared by the CPU and CUDA registrations: target attributes,
// shape validation and the dtype switch. Handlers for both platforms bind the same signature so
// that one target name serves `cpu` and `CUDA`.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_FFI_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_FFI_H_

#include <cstdint>
#include <string>

#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {

namespace ffi = xla::ffi;

inline std::string dims_string(ffi::AnyBuffer::Dimensions d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

// Checks the (N, T, H, W, C) input, the (N, To, Ho, Wo, C) output, and the (C, 3) shift against
// each other and fills `g`. `in` is x for the forward and shift gradient, and the result for the
// input gradient; errors name the buffer, so a mismatch between Python and kernel is readable.
inline ffi::Error make_geometry(const char* op, ffi::AnyBuffer::Dimensions in,
                                ffi::AnyBuffer::Dimensions out, ffi::AnyBuffer::Dimensions shift,
                                int64_t st, int64_t sh, int64_t sw, int64_t pt, int64_t ph,
                                int64_t pw, Geometry* g) {
  const std::string where = std::string(op) + ": ";
  if (in.size() != 5 || out.size() != 5)
    return ffi::Error::InvalidArgument(where + "expected rank-5 (N, T, H, W, C) buffers, got " +
                                       dims_string(in) + " and " + dims_string(out));
  const int64_t stride[3] = {st, sh, sw}, pad[3] = {pt, ph, pw};
  g->n = in[0];
  g->c = in[4];
  for (int a = 0; a < 3; ++a) {
    if (stride[a] < 1 || pad[a] < 0)
      return ffi::Error::InvalidArgument(where + "stride must be >= 1 and padding >= 0");
    g->in[a] = in[a + 1];
    g->out[a] = out[a + 1];
    g->stride[a] = stride[a];
    g->pad[a] = pad[a];
    if (g->in[a] < 1 || g->out[a] != out_extent(g->in[a], stride[a], pad[a]))
      return ffi::Error::InvalidArgument(where + "input " + dims_string(in) + " and output " +
                                         dims_string(out) + " disagree with stride/padding");
  }
  if (out[0] != g->n || out[4] != g->c)
    return ffi::Error::InvalidArgument(where + "batch or channels differ between " +
                                       dims_string(in) + " and " + dims_string(out));
  if (shift.size() != 2 || shift[0] != g->c || shift[1] != 3)
    return ffi::Error::InvalidArgument(where + "shift must be (C, 3) = (" + std::to_string(g->c) +
                                       ", 3), got " + dims_string(shift));
  return ffi::Error::Success();
}

// The geometry of an interpolation (forward: src x, dst y; kAdjoint, the input gradient: src dy,
// dst dx), checked against the shift, and src and dst of one dtype.
template <bool kAdjoint>
ffi::Error interpolation_geometry(const char* op, const ffi::AnyBuffer& src,
                                  const ffi::AnyBuffer& dst, ffi::AnyBuffer::Dimensions shift,
                                  int64_t st, int64_t sh, int64_t sw, int64_t pt, int64_t ph,
                                  int64_t pw, Geometry* g) {
  const auto in_dims = kAdjoint ? dst.dimensions() : src.dimensions();
  const auto out_dims = kAdjoint ? src.dimensions() : dst.dimensions();
  if (auto err = make_geometry(op, in_dims, out_dims, shift, st, sh, sw, pt, ph, pw, g);
      !err.success())
    return err;
  if (src.element_type() != dst.element_type())
    return ffi::Error::InvalidArgument(std::string(op) + ": input and output dtypes differ");
  return ffi::Error::Success();
}

// The shift gradient's geometry (x and dy against each other and the shift) and its results:
// dshift (C, 3) and the partial sums (P, C, 3), P >= 1 chunks.
inline ffi::Error grad_shift_geometry(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                                      ffi::AnyBuffer::Dimensions shift,
                                      ffi::AnyBuffer::Dimensions dshift,
                                      ffi::AnyBuffer::Dimensions partials, int64_t st, int64_t sh,
                                      int64_t sw, int64_t pt, int64_t ph, int64_t pw, Geometry* g) {
  const char* op = "rubiks_shift_grad_shift";
  if (auto err = make_geometry(op, x.dimensions(), dy.dimensions(), shift, st, sh, sw, pt, ph, pw,
                               g);
      !err.success())
    return err;
  if (x.element_type() != dy.element_type())
    return ffi::Error::InvalidArgument(std::string(op) + ": x and dy dtypes differ");
  if (partials.size() != 3 || partials[0] < 1 || partials[1] != g->c || partials[2] != 3 ||
      dshift.size() != 2 || dshift[0] != g->c || dshift[1] != 3)
    return ffi::Error::InvalidArgument(std::string(op) + ": expected results (C, 3) and " +
                                       "(P, C, 3), got " + dims_string(dshift) + " and " +
                                       dims_string(partials));
  return ffi::Error::Success();
}

// Calls fn.template operator()<D>() for the storage type of `dtype`.
template <typename Fn>
ffi::Error dispatch_dtype(ffi::DataType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case ffi::DataType::F32:
      return fn.template operator()<DType::kF32>();
    case ffi::DataType::BF16:
      return fn.template operator()<DType::kBF16>();
    case ffi::DataType::F16:
      return fn.template operator()<DType::kF16>();
    default:
      return ffi::Error::InvalidArgument(std::string(op) +
                                         ": x must be float32, bfloat16 or float16");
  }
}

// Target names, identical for the `cpu` and `CUDA` registrations (rubiks_jax/ops/ffi_kernels.py
// spells them for Python; tests/ops/test_lowering.py checks that the two agree).
constexpr const char kForwardTarget[] = "rubiks_shift_forward";
constexpr const char kGradInputTarget[] = "rubiks_shift_grad_input";
constexpr const char kGradShiftTarget[] = "rubiks_shift_grad_shift";
// The op benchmark's CPU floor pass (not part of the op; registered by the CPU module alone).
constexpr const char kStreamNegateTarget[] = "rubiks_jax_stream_negate";

}  // namespace rubiks

// Attributes shared by every handler's binding; each platform's binding adds its context (thread
// pool or stream) before the buffers.
#define RUBIKS_SHIFT_ATTRS(binding)      \
  binding.Attr<int64_t>("stride_t")      \
      .Attr<int64_t>("stride_h")         \
      .Attr<int64_t>("stride_w")         \
      .Attr<int64_t>("pad_t")            \
      .Attr<int64_t>("pad_h")            \
      .Attr<int64_t>("pad_w")

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_FFI_H_
