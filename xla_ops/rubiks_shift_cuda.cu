// CUDA kernels of the RubiksShift op: forward, input gradient, shift gradient.
//
// The kernels are thin __global__ shells around the thread bodies of rubiks_shift_kernels.h, which
// the test suite also runs on the host (cuda_emulation.cc); the arithmetic is the row functions of
// rubiks_shift_math.h, shared with the CPU kernels. Compiled with -fmad=false so that every float
// operation rounds as on the host: the GPU gives the CPU kernels' bits.
//
// The handlers launch on the stream XLA passes in and allocate nothing (the shift-gradient scratch
// is an extra XLA-allocated output), so they are marked command-buffer (CUDA graph) compatible.
// Every launch is checked.
//
// Two versions of the forward and input-gradient kernels are compiled: v3 (one thread per row
// segment and channel, rubiks_shift_kernels.h) and v4 (tiles staged in shared memory,
// rubiks_shift_kernels_v4.h). RUBIKS_JAX_CUDA_KERNELS=v3|v4 picks one when a call is launched (or
// captured into a CUDA graph); unset, v3. The shift gradient is the same in both.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "rubiks_shift_ffi.h"
#include "rubiks_shift_kernels.h"
#include "rubiks_shift_kernels_v4.h"
#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {
namespace {

// At least 4 resident blocks of kThreads per SM (50% occupancy): at most 64 registers per thread.
constexpr int kMinBlocksPerSm = 4;

template <DType D, bool kAdjoint, bool kUnitW, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    rubiks_interpolate_kernel(const typename Storage<D>::T* __restrict__ src,
                              const float* __restrict__ shift,
                              typename Storage<D>::T* __restrict__ dst, Geometry g, bool quantize,
                              InterpolationPlan plan) {
  interpolate_thread<D, kAdjoint, kUnitW, I>(src, shift, dst, g, quantize, plan, blockIdx.x,
                                             threadIdx.x);
}

// v4: the four phases of rubiks_shift_kernels_v4.h between barriers. 48 KB of static shared memory
// per block: 4 blocks per SM, so the same 64-register bound as v3.
template <DType D, bool kAdjoint, bool kUnitW, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    rubiks_interpolate_v4_kernel(const typename Storage<D>::T* __restrict__ src,
                                 const float* __restrict__ shift,
                                 typename Storage<D>::T* __restrict__ dst, Geometry g,
                                 bool quantize, V4Plan plan) {
  __shared__ V4Shared sh;
  const V4Tile tile = v4_tile(g, kAdjoint, plan, blockIdx.x);
  v4_shift_phase(shift, g, quantize, tile, threadIdx.x, sh);
  __syncthreads();
  v4_range_phase(threadIdx.x, sh);
  __syncthreads();
  v4_stage_phase<D, kAdjoint, I>(src, g, tile, threadIdx.x, sh);
  __syncthreads();
  v4_interpolate_phase<D, kAdjoint, kUnitW, I>(src, dst, g, tile, threadIdx.x, sh);
}

// The 64-bit variant (tensors of 2^31 elements or more) gets 2 blocks per SM: at 64 registers its
// 64-bit row offsets spill.
template <DType D, typename I>
__global__ void __launch_bounds__(kThreads, sizeof(I) == 4 ? kMinBlocksPerSm : 2)
    rubiks_shift_grad_partials_kernel(const typename Storage<D>::T* __restrict__ x,
                                      const typename Storage<D>::T* __restrict__ dy,
                                      const float* __restrict__ shift,
                                      float* __restrict__ partials, Geometry g, int64_t chunks) {
  shift_grad_partials_thread<D, I>(x, dy, shift, partials, g, chunks, blockIdx.x, threadIdx.x);
}

__global__ void __launch_bounds__(kReduceTile* kReduceLanes)
    rubiks_shift_grad_reduce_kernel(const float* __restrict__ partials, float* __restrict__ dshift,
                                    int64_t chunks, int64_t c3) {
  __shared__ ReduceShared sums;
  reduce_load_phase(partials, sums, chunks, c3, blockIdx.x, threadIdx.x, threadIdx.y);
  __syncthreads();
  for (int half = kReduceLanes / 2; half > 0; half /= 2) {
    reduce_tree_phase(sums, half, threadIdx.x, threadIdx.y);
    __syncthreads();
  }
  reduce_store_phase(sums, dshift, c3, blockIdx.x, threadIdx.x, threadIdx.y);
}

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

ffi::Error check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string(kernel) + ": launch failed: " + cudaGetErrorString(err));
}

ffi::Error check_grid(const char* op, int64_t blocks) {
  if (blocks <= 0x7fffffff) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(op) + ": " + std::to_string(blocks) +
                                     " blocks exceed the CUDA grid");
}

// The interpolation kernels' version RUBIKS_JAX_CUDA_KERNELS asks for: 3 (unset or "v3") or 4.
ffi::Error kernels_version(const char* op, int* version) {
  const char* value = std::getenv("RUBIKS_JAX_CUDA_KERNELS");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "v3") == 0) {
    *version = 3;
  } else if (std::strcmp(value, "v4") == 0) {
    *version = 4;
  } else {
    return ffi::Error::InvalidArgument(std::string(op) + ": RUBIKS_JAX_CUDA_KERNELS must be v3 " +
                                       "or v4, got '" + value + "'");
  }
  return ffi::Error::Success();
}

// Forward (kAdjoint = false: y from x) and input gradient (kAdjoint = true: dx from dy).
template <bool kAdjoint>
ffi::Error interpolate(const char* op, cudaStream_t stream, ffi::AnyBuffer src,
                       ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::AnyBuffer> dst, int64_t st,
                       int64_t sh, int64_t sw, int64_t pt, int64_t ph, int64_t pw, bool quantize) {
  Geometry g;
  if (auto err = interpolation_geometry<kAdjoint>(op, src, *dst, shift.dimensions(), st, sh, sw, pt,
                                                  ph, pw, &g);
      !err.success())
    return err;
  int version = 3;
  if (auto err = kernels_version(op, &version); !err.success()) return err;
  const InterpolationPlan plan = plan_interpolation(g, kAdjoint);
  if (plan.items == 0 || plan.width == 0) return ffi::Error::Success();
  const V4Plan v4 = plan_v4(g, kAdjoint);
  if (auto err = check_grid(op, version == 4 ? v4.blocks : plan.blocks); !err.success()) return err;
  return dispatch_dtype(src.element_type(), op, [&]<DType D>() -> ffi::Error {
    using T = typename Storage<D>::T;
    const T* in = reinterpret_cast<const T*>(src.untyped_data());
    T* out = reinterpret_cast<T*>(dst->untyped_data());
    return with_interpolation_variant(g, /*force_64bit=*/false, [&]<bool kUnitW, typename I>() {
      if (version == 4) {
        rubiks_interpolate_v4_kernel<D, kAdjoint, kUnitW, I>
            <<<static_cast<unsigned>(v4.blocks), kThreads, 0, stream>>>(
                in, shift.typed_data(), out, g, quantize, v4);
      } else {
        rubiks_interpolate_kernel<D, kAdjoint, kUnitW, I>
            <<<static_cast<unsigned>(plan.blocks), kThreads, 0, stream>>>(
                in, shift.typed_data(), out, g, quantize, plan);
      }
      return check_launch(op);
    });
  });
}

ffi::Error Forward(cudaStream_t stream, ffi::AnyBuffer x, ffi::Buffer<ffi::F32> shift,
                   ffi::Result<ffi::AnyBuffer> y, int64_t st, int64_t sh, int64_t sw, int64_t pt,
                   int64_t ph, int64_t pw, bool quantize) {
  return interpolate<false>(kForwardTarget, stream, x, shift, y, st, sh, sw, pt, ph, pw, quantize);
}

ffi::Error GradInput(cudaStream_t stream, ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> shift,
                     ffi::Result<ffi::AnyBuffer> dx, int64_t st, int64_t sh, int64_t sw, int64_t pt,
                     int64_t ph, int64_t pw, bool quantize) {
  return interpolate<true>(kGradInputTarget, stream, dy, shift, dx, st, sh, sw, pt, ph, pw,
                           quantize);
}

// dshift = sum over (n, to, ho, wo) of dy * dy/dshift, in the two passes of rubiks_shift_math.h:
// the P = partials.shape[0] point chunks (P is chosen by Python from the shape) write their sums to
// partials[p], then pass 2 sums the chunks in a fixed order. No atomics: same inputs, same bits.
ffi::Error GradShift(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                     ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::Buffer<ffi::F32>> dshift,
                     ffi::Result<ffi::Buffer<ffi::F32>> partials, int64_t st, int64_t sh,
                     int64_t sw, int64_t pt, int64_t ph, int64_t pw) {
  Geometry g;
  if (auto err = grad_shift_geometry(x, dy, shift.dimensions(), dshift->dimensions(),
                                     partials->dimensions(), st, sh, sw, pt, ph, pw, &g);
      !err.success())
    return err;
  const int64_t chunks = partials->dimensions()[0];
  const int64_t c3 = g.c * 3;
  if (c3 == 0) return ffi::Error::Success();
  const int64_t blocks = partials_blocks(g, chunks);
  if (auto err = check_grid(kGradShiftTarget, blocks); !err.success()) return err;

  // Pass 1 runs even when there are no points (N = 0): it then writes the zeros pass 2 sums.
  ffi::Error err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    return with_index_type(g, /*force_64bit=*/false, [&]<typename I>() {
      rubiks_shift_grad_partials_kernel<D, I>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
              reinterpret_cast<const T*>(x.untyped_data()),
              reinterpret_cast<const T*>(dy.untyped_data()), shift.typed_data(),
              partials->typed_data(), g, chunks);
      return check_launch("rubiks_shift_grad_shift (pass 1, partial sums)");
    });
  });
  if (!err.success()) return err;
  const int64_t r_blocks = reduce_blocks(c3);
  if (auto err = check_grid(kGradShiftTarget, r_blocks); !err.success()) return err;
  rubiks_shift_grad_reduce_kernel<<<static_cast<unsigned>(r_blocks),
                                    dim3(kReduceTile, kReduceLanes), 0, stream>>>(
      partials->typed_data(), dshift->typed_data(), chunks, c3);
  return check_launch("rubiks_shift_grad_shift (pass 2, sum of chunks)");
}

}  // namespace
}  // namespace rubiks

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftForwardCuda, rubiks::Forward,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradInputCuda, rubiks::GradInput,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::AnyBuffer>())
                                  .Attr<bool>("quantize"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(RubiksShiftGradShiftCuda, rubiks::GradShift,
                              RUBIKS_SHIFT_ATTRS(xla::ffi::Ffi::Bind()
                                                     .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::AnyBuffer>()
                                                     .Arg<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>()
                                                     .Ret<xla::ffi::Buffer<xla::ffi::F32>>()),
                              {xla::ffi::Traits::kCmdBufferCompatible});
