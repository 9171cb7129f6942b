// CUDA kernels of the RubiksShift op: forward, input gradient, shift gradient. Launched on the
// stream XLA passes in; no allocation inside the handlers (the shift-gradient scratch is an extra
// XLA-allocated output), so the handlers are command-buffer (CUDA graph) compatible. Every launch is
// checked; all offsets are 64-bit. Per-point arithmetic comes from rubiks_shift_math.h, shared with
// the CPU kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "rubiks_shift_ffi.h"
#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {
namespace {

constexpr int kThreads = 256;
// Shift-gradient pass 1: a block is kTileC channels (threadIdx.x, consecutive channels so loads
// coalesce) by kLanes lanes that stride over the chunk's points (threadIdx.y).
constexpr int kTileC = 32;
constexpr int kLanes = 8;

template <DType D, bool kAdjoint>
__global__ void __launch_bounds__(kThreads)
    interpolate_kernel(const typename Storage<D>::T* __restrict__ src,
                       const float* __restrict__ shift, typename Storage<D>::T* __restrict__ dst,
                       Geometry g, bool quantize, int64_t total) {
  const int64_t* ext = kAdjoint ? g.in : g.out;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int64_t c = i % g.c;
    int64_t r = i / g.c;
    const int64_t p2 = r % ext[2];
    r /= ext[2];
    const int64_t p1 = r % ext[1];
    r /= ext[1];
    const int64_t p0 = r % ext[0];
    const int64_t n = r / ext[0];
    const ChannelShift cs = channel_shift(shift + 3 * c, quantize);
    dst[i] = Storage<D>::store(interpolate_point<D, kAdjoint>(src, g, cs, n, p0, p1, p2, c));
  }
}

// Pass 1: partials[p, c, :] = sum over the points of chunk p of dy * dy/dshift for channel c,
// reduced over the kLanes lanes in a fixed order (no atomics: bit-reproducible).
template <DType D>
__global__ void __launch_bounds__(kTileC* kLanes)
    shift_grad_partials_kernel(const typename Storage<D>::T* __restrict__ x,
                               const typename Storage<D>::T* __restrict__ dy,
                               const float* __restrict__ shift, float* __restrict__ partials,
                               Geometry g, int64_t chunks) {
  __shared__ float sums[kLanes][kTileC][3];
  const int64_t p = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kTileC + threadIdx.x;
  const int64_t rows = g.n * g.out[0] * g.out[1];
  const int64_t row_begin = chunk_begin(rows, chunks, p);
  const int64_t points = (chunk_begin(rows, chunks, p + 1) - row_begin) * g.out[2];
  float acc[3] = {0.f, 0.f, 0.f};
  if (c < g.c) {
    const ChannelShift cs = channel_shift(shift + 3 * c, /*quantize=*/false);
    for (int64_t j = threadIdx.y; j < points; j += kLanes) {
      const int64_t r = row_begin + j / g.out[2];
      const int64_t ow = j % g.out[2];
      const int64_t oh = r % g.out[1];
      const int64_t ot = (r / g.out[1]) % g.out[0];
      const int64_t n = r / (g.out[0] * g.out[1]);
      shift_grad_point<D>(x, dy, g, cs, n, ot, oh, ow, c, acc);
    }
  }
  for (int a = 0; a < 3; ++a) sums[threadIdx.y][threadIdx.x][a] = acc[a];
  __syncthreads();
  if (threadIdx.y == 0 && c < g.c) {
    for (int a = 0; a < 3; ++a) {
      float total = sums[0][threadIdx.x][a];
      for (int l = 1; l < kLanes; ++l) total += sums[l][threadIdx.x][a];
      partials[(p * g.c + c) * 3 + a] = total;
    }
  }
}

// Pass 2: dshift[c, a] = sum over chunks in order.
__global__ void __launch_bounds__(kThreads)
    shift_grad_reduce_kernel(const float* __restrict__ partials, float* __restrict__ dshift,
                             int64_t chunks, int64_t c3) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= c3) return;
  float total = 0.f;
  for (int64_t p = 0; p < chunks; ++p) total += partials[p * c3 + i];
  dshift[i] = total;
}

ffi::Error check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error(ffi::ErrorCode::kInternal,
                    std::string(kernel) + " launch failed: " + cudaGetErrorString(err));
}

// Grid for a grid-stride kernel: as many resident blocks as the device holds, capped by the work.
template <typename Kernel>
ffi::Error occupancy_grid(Kernel kernel, int threads, int64_t work, unsigned* grid) {
  int device = 0, sms = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("device query failed: ") + cudaGetErrorString(cudaGetLastError()));
  }
  const int64_t needed = (work + threads - 1) / threads;
  *grid = static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(sms) * per_sm)));
  return ffi::Error::Success();
}

template <bool kAdjoint>
ffi::Error interpolate(const char* op, cudaStream_t stream, ffi::AnyBuffer src,
                       ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::AnyBuffer> dst, int64_t st,
                       int64_t sh, int64_t sw, int64_t pt, int64_t ph, int64_t pw, bool quantize) {
  Geometry g;
  const auto in_dims = kAdjoint ? dst->dimensions() : src.dimensions();
  const auto out_dims = kAdjoint ? src.dimensions() : dst->dimensions();
  if (auto err = make_geometry(op, in_dims, out_dims, shift.dimensions(), st, sh, sw, pt, ph, pw,
                               &g);
      !err.success())
    return err;
  if (src.element_type() != dst->element_type())
    return ffi::Error::InvalidArgument(std::string(op) + ": input and output dtypes differ");
  const int64_t total = static_cast<int64_t>(dst->element_count());
  if (total == 0) return ffi::Error::Success();
  return dispatch_dtype(src.element_type(), op, [&]<DType D>() -> ffi::Error {
    using T = typename Storage<D>::T;
    auto kernel = interpolate_kernel<D, kAdjoint>;
    unsigned grid = 1;
    if (auto err = occupancy_grid(kernel, kThreads, total, &grid); !err.success()) return err;
    kernel<<<grid, kThreads, 0, stream>>>(
        reinterpret_cast<const T*>(src.untyped_data()), shift.typed_data(),
        reinterpret_cast<T*>(dst->untyped_data()), g, quantize, total);
    return check_launch(op);
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

ffi::Error GradShift(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                     ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::Buffer<ffi::F32>> dshift,
                     ffi::Result<ffi::Buffer<ffi::F32>> partials, int64_t st, int64_t sh,
                     int64_t sw, int64_t pt, int64_t ph, int64_t pw) {
  Geometry g;
  if (auto err = make_geometry(kGradShiftTarget, x.dimensions(), dy.dimensions(),
                               shift.dimensions(), st, sh, sw, pt, ph, pw, &g);
      !err.success())
    return err;
  if (x.element_type() != dy.element_type())
    return ffi::Error::InvalidArgument("rubiks_shift_grad_shift: x and dy dtypes differ");
  const auto pd = partials->dimensions();
  if (pd.size() != 3 || pd[0] < 1 || pd[1] != g.c || pd[2] != 3 ||
      dshift->dimensions().size() != 2 || dshift->dimensions()[0] != g.c)
    return ffi::Error::InvalidArgument(
        "rubiks_shift_grad_shift: expected results (C, 3) and (P, C, 3), got " +
        dims_string(dshift->dimensions()) + " and " + dims_string(pd));
  const int64_t chunks = pd[0];
  const int64_t c3 = g.c * 3;
  if (c3 == 0) return ffi::Error::Success();
  if (chunks > 0x7fffffff)
    return ffi::Error::InvalidArgument("rubiks_shift_grad_shift: too many reduction chunks");
  ffi::Error err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>((g.c + kTileC - 1) / kTileC));
    shift_grad_partials_kernel<D><<<grid, dim3(kTileC, kLanes), 0, stream>>>(
        reinterpret_cast<const T*>(x.untyped_data()), reinterpret_cast<const T*>(dy.untyped_data()),
        shift.typed_data(), partials->typed_data(), g, chunks);
    return check_launch("rubiks_shift_grad_shift partials");
  });
  if (!err.success()) return err;
  shift_grad_reduce_kernel<<<static_cast<unsigned>((c3 + kThreads - 1) / kThreads), kThreads, 0,
                             stream>>>(partials->typed_data(), dshift->typed_data(), chunks, c3);
  return check_launch("rubiks_shift_grad_shift reduce");
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
