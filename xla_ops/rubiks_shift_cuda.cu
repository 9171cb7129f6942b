// CUDA kernels of the RubiksShift op: forward, input gradient, shift gradient.
//
// The handlers launch on the stream XLA passes in and allocate nothing (the shift-gradient scratch
// is an extra XLA-allocated output), so they are marked command-buffer (CUDA graph) compatible.
// Every launch is checked; every offset is 64-bit. The per-point arithmetic is the one of
// rubiks_shift_math.h, shared with the CPU kernels; this file only decides which thread computes
// which point and in which order partial sums are added.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <string>

#include "rubiks_shift_ffi.h"
#include "rubiks_shift_math.h"
#include "xla/ffi/api/ffi.h"

namespace rubiks {
namespace {

// Threads per block of the interpolation kernels (forward, input gradient).
constexpr int kThreads = 256;
// Most threads per block of the shift-gradient pass 1 (channels x lanes, see plan_partials).
constexpr int kPartialsThreads = 256;
// Shift-gradient pass 2: a block sums kReduceTile consecutive (c, a) entries, each over
// kReduceLanes interleaved subsets of the chunks, so the chunk loop is short and its loads coalesce.
constexpr int kReduceTile = 32;
constexpr int kReduceLanes = 16;

// ---------------------------------------------------------------------------------------------
// Mixed-radix cursor. A thread of a grid-stride loop visits i, i + S, i + 2S, ...; splitting every
// i into (n, t, h, w, c) would cost several 64-bit divisions per point, which is more than the
// interpolation itself. Instead the thread splits its first index once and then adds the digits of
// the constant stride S with carries (one compare per digit, since every digit of S is below its
// radix). Digit 0 is the most significant one and is unbounded.
// ---------------------------------------------------------------------------------------------
template <int K>
struct Digits {
  int64_t d[K];
};

template <int K>
__host__ __device__ inline Digits<K> split(int64_t i, const int64_t (&radix)[K]) {
  Digits<K> out;
  for (int k = K - 1; k > 0; --k) {
    out.d[k] = i % radix[k];
    i /= radix[k];
  }
  out.d[0] = i;
  return out;
}

template <int K>
__device__ __forceinline__ void advance(Digits<K>& pos, const Digits<K>& step,
                                        const int64_t (&radix)[K]) {
  int64_t carry = 0;
#pragma unroll
  for (int k = K - 1; k > 0; --k) {
    int64_t v = pos.d[k] + step.d[k] + carry;
    carry = v >= radix[k];
    pos.d[k] = carry ? v - radix[k] : v;
  }
  pos.d[0] += step.d[0] + carry;
}

// Radices of the destination of an interpolation: (n, p0, p1, p2, c).
__host__ __device__ inline void dst_radix(const Geometry& g, bool adjoint, int64_t (&radix)[5]) {
  const int64_t* ext = adjoint ? g.in : g.out;
  radix[0] = 0;
  radix[1] = ext[0];
  radix[2] = ext[1];
  radix[3] = ext[2];
  radix[4] = g.c;
}

// Radices of the output points visited by the shift gradient: (n, to, ho, wo).
__host__ __device__ inline void point_radix(const Geometry& g, int64_t (&radix)[4]) {
  radix[0] = 0;
  radix[1] = g.out[0];
  radix[2] = g.out[1];
  radix[3] = g.out[2];
}

// ---------------------------------------------------------------------------------------------
// Kernels.
// ---------------------------------------------------------------------------------------------

// dst[i] for every destination element i: y from x (forward) or dx from dy (kAdjoint). One thread
// per element, channel fastest, so a warp writes consecutive addresses. kUnitStride pins the
// strides to the constant 1, which lets the compiler drop the 64-bit multiplications (forward) and
// divisions (adjoint_tap) by the stride from the shared math.
template <DType D, bool kAdjoint, bool kUnitStride>
__global__ void __launch_bounds__(kThreads)
    interpolate_kernel(const typename Storage<D>::T* __restrict__ src,
                       const float* __restrict__ shift, typename Storage<D>::T* __restrict__ dst,
                       Geometry g, bool quantize, int64_t total, Digits<5> step, int64_t step_total) {
  if constexpr (kUnitStride) g.stride[0] = g.stride[1] = g.stride[2] = 1;
  int64_t radix[5];
  dst_radix(g, kAdjoint, radix);
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  Digits<5> pos = split(i, radix);
  // The channel of a thread changes only if step_total is not a multiple of C (the grid is sized to
  // make it one when that is cheap): recompute the shift (double-precision floor and clamp) then.
  int64_t cs_channel = pos.d[4];
  ChannelShift cs = channel_shift(shift + 3 * cs_channel, quantize);
  for (; i < total; i += step_total) {
    const int64_t c = pos.d[4];
    if (c != cs_channel) {
      cs = channel_shift(shift + 3 * c, quantize);
      cs_channel = c;
    }
    dst[i] = Storage<D>::store(
        interpolate_point<D, kAdjoint>(src, g, cs, pos.d[0], pos.d[1], pos.d[2], pos.d[3], c));
    advance(pos, step, radix);
  }
}

// Shift-gradient pass 1. Block b handles chunk p = b / tiles and channels [tile * tile_c, ... +
// tile_c). Thread t is channel tile * tile_c + t % tile_c and lane t / tile_c; lane l visits the
// chunk's points l, l + lanes, l + 2 * lanes, ... Points of a chunk are contiguous in dy, so a warp
// reads consecutive addresses whatever C is. The lanes of a channel are then summed by a tree of
// fixed shape, and partials[p, c, :] is written. The block shape depends on C alone (never on the
// device), so the same inputs give the same bits.
template <DType D>
__global__ void __launch_bounds__(kPartialsThreads)
    shift_grad_partials_kernel(const typename Storage<D>::T* __restrict__ x,
                               const typename Storage<D>::T* __restrict__ dy,
                               const float* __restrict__ shift, float* __restrict__ partials,
                               Geometry g, int64_t chunks, int tiles, int tile_c, int lanes,
                               Digits<4> lane_step) {
  __shared__ float sums[3][kPartialsThreads];
  const int t = threadIdx.x;
  const int lane = t / tile_c;
  const int64_t p = blockIdx.x / tiles;
  const int64_t c = static_cast<int64_t>(blockIdx.x % tiles) * tile_c + t % tile_c;

  int64_t radix[4];
  point_radix(g, radix);
  const int64_t rows = g.n * g.out[0] * g.out[1];
  const int64_t end = chunk_begin(rows, chunks, p + 1) * g.out[2];
  int64_t j = chunk_begin(rows, chunks, p) * g.out[2] + lane;

  float acc[3] = {0.f, 0.f, 0.f};
  if (c < g.c && j < end) {
    const ChannelShift cs = channel_shift(shift + 3 * c, /*quantize=*/false);
    Digits<4> pos = split(j, radix);
    for (; j < end; j += lanes) {
      shift_grad_point<D>(x, dy, g, cs, pos.d[0], pos.d[1], pos.d[2], pos.d[3], c, acc);
      advance(pos, lane_step, radix);
    }
  }

  for (int a = 0; a < 3; ++a) sums[a][t] = acc[a];
  __syncthreads();
  // Fixed-shape tree over lanes: after the step with `half`, lanes [0, half) hold everything.
  int half = 1;
  while (half < lanes) half *= 2;
  for (half /= 2; half > 0; half /= 2) {
    if (lane < half && lane + half < lanes)
      for (int a = 0; a < 3; ++a) sums[a][t] += sums[a][t + half * tile_c];
    __syncthreads();
  }
  if (lane == 0 && c < g.c)
    for (int a = 0; a < 3; ++a) partials[(p * g.c + c) * 3 + a] = sums[a][t];
}

// Shift-gradient pass 2: dshift[i] = sum over chunks of partials[:, i], i = 3 * c + a. Lane l of
// entry i adds chunks l, l + kReduceLanes, ... in order; the lanes are then summed by a fixed tree.
__global__ void __launch_bounds__(kReduceTile* kReduceLanes)
    shift_grad_reduce_kernel(const float* __restrict__ partials, float* __restrict__ dshift,
                             int64_t chunks, int64_t c3) {
  __shared__ float sums[kReduceLanes][kReduceTile];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kReduceTile + threadIdx.x;
  const int lane = threadIdx.y;
  float s = 0.f;
  if (i < c3) {
#pragma unroll 8
    for (int64_t p = lane; p < chunks; p += kReduceLanes) s += __ldg(partials + p * c3 + i);
  }
  sums[lane][threadIdx.x] = s;
  __syncthreads();
#pragma unroll
  for (int half = kReduceLanes / 2; half > 0; half /= 2) {
    if (lane < half) sums[lane][threadIdx.x] += sums[lane + half][threadIdx.x];
    __syncthreads();
  }
  if (lane == 0 && i < c3) dshift[i] = sums[0][threadIdx.x];
}

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

ffi::Error check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string(kernel) + ": launch failed: " + cudaGetErrorString(err));
}

// Device of the stream XLA handed us (the current device may differ on multi-GPU hosts).
ffi::Error stream_device(cudaStream_t stream, int* device) {
#if CUDART_VERSION >= 12080
  if (cudaStreamGetDevice(stream, device) == cudaSuccess) return ffi::Error::Success();
  cudaGetLastError();  // an older driver lacks the call: fall back to the current device
#endif
  const cudaError_t err = cudaGetDevice(device);
  if (err == cudaSuccess) return ffi::Error::Success();
  cudaGetLastError();
  return ffi::Error::Internal(std::string("rubiks_shift: cannot find the stream's device: ") +
                              cudaGetErrorString(err));
}

// Blocks of `Kernel` (kThreads threads, no dynamic shared memory) resident on the whole device at
// once. Queried once per kernel and device: handlers run on every call outside command buffers.
template <auto Kernel>
ffi::Error resident_blocks(cudaStream_t stream, const char* name, int64_t* blocks) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int64_t> cache[kMaxDevices];  // 0 = not queried yet
  int device = 0;
  if (auto err = stream_device(stream, &device); !err.success()) return err;
  if (device >= 0 && device < kMaxDevices) {
    *blocks = cache[device].load(std::memory_order_relaxed);
    if (*blocks > 0) return ffi::Error::Success();
  }
  int sms = 0, per_sm = 0;
  cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, kThreads, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return ffi::Error::Internal(std::string(name) + ": occupancy query failed: " +
                                cudaGetErrorString(err));
  }
  *blocks = std::max<int64_t>(1, static_cast<int64_t>(sms) * per_sm);
  if (device >= 0 && device < kMaxDevices) cache[device].store(*blocks, std::memory_order_relaxed);
  return ffi::Error::Success();
}

// Forward (kAdjoint = false: y from x) and input gradient (kAdjoint = true: dx from dy).
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
  const bool unit_stride = st == 1 && sh == 1 && sw == 1;

  return dispatch_dtype(src.element_type(), op, [&]<DType D>() -> ffi::Error {
    using T = typename Storage<D>::T;
    auto launch = [&]<auto Kernel>() -> ffi::Error {
      int64_t resident = 0;
      if (auto err = resident_blocks<Kernel>(stream, op, &resident); !err.success()) return err;
      const int64_t needed = (total + kThreads - 1) / kThreads;
      int64_t grid = std::min(needed, resident);
      // A grid stride that is a multiple of C keeps each thread on one channel (its shift is then
      // computed once); trim the grid to get one when that costs at most 1/8 of it.
      if (grid < needed) {
        const int64_t period = g.c / std::gcd(g.c, static_cast<int64_t>(kThreads));
        if (period <= grid && grid % period <= grid / 8) grid -= grid % period;
      }
      const int64_t step_total = grid * kThreads;
      int64_t radix[5];
      dst_radix(g, kAdjoint, radix);
      Kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
          reinterpret_cast<const T*>(src.untyped_data()), shift.typed_data(),
          reinterpret_cast<T*>(dst->untyped_data()), g, quantize, total,
          split(step_total, radix), step_total);
      return check_launch(op);
    };
    return unit_stride ? launch.template operator()<interpolate_kernel<D, kAdjoint, true>>()
                       : launch.template operator()<interpolate_kernel<D, kAdjoint, false>>();
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

// Block shape of pass 1, a function of C only (determinism). Up to kPartialsThreads channels form
// one tile and the rest of the block are extra lanes over points; wider C is cut into tiles of
// near-equal width, rounded to whole warps.
struct PartialsPlan {
  int tile_c;
  int lanes;
  int64_t tiles;
};

PartialsPlan plan_partials(int64_t c) {
  PartialsPlan plan;
  if (c <= kPartialsThreads) {
    plan.tile_c = static_cast<int>(c);
  } else {
    const int64_t tiles = (c + kPartialsThreads - 1) / kPartialsThreads;
    const int64_t width = (c + tiles - 1) / tiles;
    plan.tile_c = static_cast<int>((width + 31) / 32 * 32);
  }
  plan.lanes = kPartialsThreads / plan.tile_c;
  plan.tiles = (c + plan.tile_c - 1) / plan.tile_c;
  return plan;
}

// dshift = sum over (n, to, ho, wo) of dy * dy/dshift, in two passes without atomics: chunk p of
// the P = partials.shape[0] output-row chunks (P is chosen by Python from the shape) writes its sums
// to partials[p], then the chunks are summed in a fixed order. Same inputs give the same bits.
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

  const PartialsPlan plan = plan_partials(g.c);
  const int64_t blocks = chunks * plan.tiles;
  if (blocks > 0x7fffffff || plan.tiles > 0x7fffffff)
    return ffi::Error::InvalidArgument("rubiks_shift_grad_shift: " + std::to_string(chunks) +
                                       " chunks x " + std::to_string(plan.tiles) +
                                       " channel tiles exceed the CUDA grid");
  int64_t radix[4];
  point_radix(g, radix);
  const Digits<4> lane_step = split(static_cast<int64_t>(plan.lanes), radix);

  // Pass 1 runs even when there are no points (N = 0): it then writes the zeros pass 2 sums.
  ffi::Error err = dispatch_dtype(x.element_type(), kGradShiftTarget, [&]<DType D>() {
    using T = typename Storage<D>::T;
    shift_grad_partials_kernel<D><<<static_cast<unsigned>(blocks), plan.tile_c * plan.lanes, 0,
                                    stream>>>(
        reinterpret_cast<const T*>(x.untyped_data()), reinterpret_cast<const T*>(dy.untyped_data()),
        shift.typed_data(), partials->typed_data(), g, chunks, static_cast<int>(plan.tiles),
        plan.tile_c, plan.lanes, lane_step);
    return check_launch("rubiks_shift_grad_shift (pass 1, partial sums)");
  });
  if (!err.success()) return err;
  const int64_t reduce_blocks = (c3 + kReduceTile - 1) / kReduceTile;
  if (reduce_blocks > 0x7fffffff)
    return ffi::Error::InvalidArgument("rubiks_shift_grad_shift: too many channels");
  shift_grad_reduce_kernel<<<static_cast<unsigned>(reduce_blocks), dim3(kReduceTile, kReduceLanes),
                             0, stream>>>(partials->typed_data(), dshift->typed_data(), chunks,
                                          c3);
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
