// Host emulation of the CUDA kernels, for the test suite: XLA FFI handlers on the `cpu` platform
// that run the CUDA kernels' thread bodies (rubiks_shift_kernels.h) over the same grid the CUDA
// handlers launch, block by block and thread by thread, with the shift gradient's pass 2 in barrier
// order. Only the __global__ shells and the hardware stay untested on a machine without a GPU.
//
// Destinations are first filled with a sentinel NaN, so an element no thread writes shows up as a
// mismatch against the CPU kernels; so is v4's shared memory before each block, so a read of
// anything its staging did not write shows up too. `force_64bit` runs the 64-bit-offset variants on
// small tensors; `version` (3 or 4) picks the interpolation kernels' version.
#include <cstdint>
#include <cstring>
#include <string>

#include "rubiks_shift_ffi.h"
#include "rubiks_shift_kernels.h"
#include "rubiks_shift_kernels_v4.h"
#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {
namespace {

constexpr unsigned char kSentinelByte = 0xff;  // all-ones bytes: a NaN in f32, bf16 and f16

template <bool kAdjoint>
ffi::Error interpolate(const char* op, ffi::AnyBuffer src, ffi::Buffer<ffi::F32> shift,
                       ffi::Result<ffi::AnyBuffer> dst, int64_t st, int64_t sh, int64_t sw,
                       int64_t pt, int64_t ph, int64_t pw, bool quantize, bool force_64bit,
                       int64_t version) {
  Geometry g;
  if (auto err = interpolation_geometry<kAdjoint>(op, src, *dst, shift.dimensions(), st, sh, sw, pt,
                                                  ph, pw, &g);
      !err.success())
    return err;
  if (version != 3 && version != 4)
    return ffi::Error::InvalidArgument(std::string(op) + ": version must be 3 or 4, got " +
                                       std::to_string(version));
  std::memset(dst->untyped_data(), kSentinelByte, dst->size_bytes());
  const InterpolationPlan plan = plan_interpolation(g, kAdjoint);
  if (plan.items == 0 || plan.width == 0) return ffi::Error::Success();
  return dispatch_dtype(src.element_type(), op, [&]<DType D>() -> ffi::Error {
    using T = typename Storage<D>::T;
    const T* in = reinterpret_cast<const T*>(src.untyped_data());
    const float* s = shift.typed_data();
    T* out = reinterpret_cast<T*>(dst->untyped_data());
    with_interpolation_variant(g, force_64bit, [&]<bool kUnitW, typename I>() {
      if (version == 3) {
        for (int64_t block = 0; block < plan.blocks; ++block)
          for (int thread = 0; thread < kThreads; ++thread)
            interpolate_thread<D, kAdjoint, kUnitW, I>(in, s, out, g, quantize, plan, block,
                                                       thread);
        return;
      }
      const V4Plan v4 = plan_v4(g, kAdjoint);
      V4Shared shared;
      for (int64_t block = 0; block < v4.blocks; ++block)
        run_v4_block_on_host<D, kAdjoint, kUnitW, I>(in, s, out, g, quantize, v4, block, shared,
                                                     [](int) {});
    });
    return ffi::Error::Success();
  });
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::AnyBuffer> y,
                   int64_t st, int64_t sh, int64_t sw, int64_t pt, int64_t ph, int64_t pw,
                   bool quantize, bool force_64bit, int64_t version) {
  return interpolate<false>(kForwardTarget, x, shift, y, st, sh, sw, pt, ph, pw, quantize,
                            force_64bit, version);
}

ffi::Error GradInput(ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> shift,
                     ffi::Result<ffi::AnyBuffer> dx, int64_t st, int64_t sh, int64_t sw,
                     int64_t pt, int64_t ph, int64_t pw, bool quantize, bool force_64bit,
                     int64_t version) {
  return interpolate<true>(kGradInputTarget, dy, shift, dx, st, sh, sw, pt, ph, pw, quantize,
                           force_64bit, version);
}

ffi::Error GradShift(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> shift,
                     ffi::Result<ffi::Buffer<ffi::F32>> dshift,
                     ffi::Result<ffi::Buffer<ffi::F32>> partials, int64_t st, int64_t sh,
                     int64_t sw, int64_t pt, int64_t ph, int64_t pw, bool force_64bit) {
  Geometry g;
  if (auto err = grad_shift_geometry(x, dy, shift.dimensions(), dshift->dimensions(),
                                     partials->dimensions(), st, sh, sw, pt, ph, pw, &g);
      !err.success())
    return err;
  std::memset(dshift->untyped_data(), kSentinelByte, dshift->size_bytes());
  std::memset(partials->untyped_data(), kSentinelByte, partials->size_bytes());
  const int64_t chunks = partials->dimensions()[0];
  const int64_t c3 = g.c * 3;
  if (c3 == 0) return ffi::Error::Success();
  ffi::Error err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    const T* xs = reinterpret_cast<const T*>(x.untyped_data());
    const T* dys = reinterpret_cast<const T*>(dy.untyped_data());
    with_index_type(g, force_64bit, [&]<typename I>() {
      for (int64_t block = 0; block < partials_blocks(g, chunks); ++block)
        for (int thread = 0; thread < kThreads; ++thread)
          shift_grad_partials_thread<D, I>(xs, dys, shift.typed_data(), partials->typed_data(), g,
                                           chunks, block, thread);
    });
    return ffi::Error::Success();
  });
  if (!err.success()) return err;
  reduce_partials_on_host(partials->typed_data(), dshift->typed_data(), chunks, c3);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rubiks

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftForwardCudaEmulation, rubiks::Forward,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize")
                                  .Attr<bool>("force_64bit")
                                  .Attr<int64_t>("version"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradInputCudaEmulation, rubiks::GradInput,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize")
                                  .Attr<bool>("force_64bit")
                                  .Attr<int64_t>("version"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradShiftCudaEmulation, rubiks::GradShift,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>())
                                  .Attr<bool>("force_64bit"));
