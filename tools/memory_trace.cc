// Memory trace of the CUDA kernels' thread bodies, on the host: the engine of tools/gpu_memory_model.py.
//
// Built by that script (g++, -DRUBIKS_MEMORY_TRACE, a shared library loaded with ctypes). It runs
// the very thread bodies the CUDA kernels and their host emulation run (xla_ops/
// rubiks_shift_kernels.h) over a sample of the launch's blocks, with RS_LOAD / RS_STORE recording
// every global and shared access: its static site (one per source expansion and template
// instantiation), the loop scope it sits in and the address.
//
// Lanes are lined up the way a warp runs them: the k-th execution of one static site, inside the
// j-th entry of one loop scope, by each of a warp's 32 threads is one request (a lane that does not
// reach it is inactive there). Per request: the distinct 32-byte sectors its lanes touch (global),
// or its wavefronts (shared memory: 32 banks of 4 bytes, lanes reading one word share it). The
// loads of one point of a loop (up to RS_TRACE_POINT) are issued before the point's arithmetic
// uses them: a batch; its sector bytes are what the warp has in flight while it waits.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rubiks_shift_kernels.h"
#include "rubiks_shift_kernels_v4.h"

namespace rubiks::trace {
namespace {

struct Event {
  uint64_t key;    // (scope site, scope entry, access site, execution): lanes with equal keys line up
  uint64_t batch;  // (scope site, scope entry, point): the loads issued together
  uint64_t address;
  uint16_t bytes;
  bool store;
  bool shared;
  uint8_t lane;
};

struct Frame {
  const void* site;
  uint64_t entry;  // how many times this thread entered the scope before
  uint64_t point;  // points of this entry completed so far
  std::vector<std::pair<const void*, uint64_t>> executions;  // per access site
};

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

// Trace state of one thread of the block being traced; `current` is the thread running now (a
// block's threads may run in several phases, between barriers).
struct Recorder {
  std::vector<Frame> frames;
  std::unordered_map<const void*, uint64_t> entries;
  std::vector<Event> events;
  uint8_t lane = 0;

  void reset(int thread) {
    frames.assign(1, Frame{nullptr, 0, 0, {}});  // the thread body's own scope
    entries.clear();
    events.clear();
    lane = static_cast<uint8_t>(thread % 32);
  }
};
Recorder* current = nullptr;

}  // namespace

// With no thread being traced (rubiks_v4_mismatches), the hooks do nothing.
void enter(const void* scope) {
  if (current == nullptr) return;
  const uint64_t entry = current->entries[scope]++;
  current->frames.push_back(Frame{scope, entry, 0, {}});
}

void leave() {
  if (current != nullptr) current->frames.pop_back();
}

void point() {
  if (current != nullptr) ++current->frames.back().point;
}

void access(const void* site, const void* address, int bytes, bool store, bool shared) {
  if (current == nullptr) return;
  Frame& f = current->frames.back();
  uint64_t execution = 0;
  auto it = std::find_if(f.executions.begin(), f.executions.end(),
                         [&](const auto& e) { return e.first == site; });
  if (it == f.executions.end()) {
    f.executions.emplace_back(site, 1);
  } else {
    execution = it->second++;
  }
  const uint64_t scope = mix(reinterpret_cast<uintptr_t>(f.site), f.entry);
  current->events.push_back(Event{
      mix(mix(scope, reinterpret_cast<uintptr_t>(site)), execution), mix(scope, f.point),
      static_cast<uint64_t>(reinterpret_cast<uintptr_t>(address)), static_cast<uint16_t>(bytes),
      store, shared, current->lane});
}

}  // namespace rubiks::trace

namespace {

using rubiks::DType;
using rubiks::Geometry;
using rubiks::trace::Event;

// What the trace counts, summed over the sampled blocks (see tools/gpu_memory_model.py).
enum Stat {
  kBlocks,            // blocks traced
  kThreads,           // threads that did any access
  kLoadRequests,      // global load instructions issued by warps (a request per warp and site run)
  kLoadSectors,       // 32-byte sectors those requests touch
  kLoadLanes,         // active lanes of those requests
  kLoadBytes,         // bytes the lanes asked for
  kStoreRequests,
  kStoreSectors,
  kStoreLanes,
  kStoreBytes,
  kBlockLoadSectors,   // distinct sectors loaded by each block, summed over blocks
  kBlockStoreSectors,  // distinct sectors stored by each block, summed over blocks
  kBatches,            // warp batches of global loads
  kBatchSectors,       // sectors of the loads in those batches
  kSharedRequests,
  kSharedWavefronts,
  kLaunchBlocks,     // blocks of the whole launch
  kWarpIterations,   // loop iterations (points, stage batches) warps run, over any access
  kStatCount,
};

// Requests of one warp's events (a block's events, lanes of threads [32w, 32w + 32)).
void warp_requests(std::vector<Event>& ev, double* s, std::unordered_set<uint64_t>& block_loads,
                   std::unordered_set<uint64_t>& block_stores) {
  std::sort(ev.begin(), ev.end(), [](const Event& a, const Event& b) {
    return a.key != b.key ? a.key < b.key : a.lane < b.lane;
  });
  std::unordered_map<uint64_t, uint64_t> batch_sectors;
  std::unordered_set<uint64_t> iterations;
  std::vector<uint64_t> sectors;
  for (size_t i = 0; i < ev.size();) {
    size_t j = i;
    while (j < ev.size() && ev[j].key == ev[i].key) ++j;
    const Event& first = ev[i];
    iterations.insert(first.batch);
    if (first.shared) {
      // Wavefronts: the most distinct 4-byte words any one bank is asked for.
      std::unordered_map<uint64_t, std::unordered_set<uint64_t>> banks;
      for (size_t k = i; k < j; ++k) {
        const uint64_t word = ev[k].address / 4;
        banks[word % 32].insert(word);
      }
      size_t wavefronts = 0;
      for (const auto& b : banks) wavefronts = std::max(wavefronts, b.second.size());
      s[kSharedRequests] += 1;
      s[kSharedWavefronts] += static_cast<double>(wavefronts);
    } else {
      sectors.clear();
      double bytes = 0;
      for (size_t k = i; k < j; ++k) {
        for (uint64_t sec = ev[k].address / 32; sec <= (ev[k].address + ev[k].bytes - 1) / 32;
             ++sec)
          sectors.push_back(sec);
        bytes += ev[k].bytes;
      }
      std::sort(sectors.begin(), sectors.end());
      sectors.erase(std::unique(sectors.begin(), sectors.end()), sectors.end());
      const double n = static_cast<double>(sectors.size());
      if (first.store) {
        s[kStoreRequests] += 1;
        s[kStoreSectors] += n;
        s[kStoreLanes] += static_cast<double>(j - i);
        s[kStoreBytes] += bytes;
        block_stores.insert(sectors.begin(), sectors.end());
      } else {
        s[kLoadRequests] += 1;
        s[kLoadSectors] += n;
        s[kLoadLanes] += static_cast<double>(j - i);
        s[kLoadBytes] += bytes;
        block_loads.insert(sectors.begin(), sectors.end());
        batch_sectors[first.batch] += sectors.size();
      }
    }
    i = j;
  }
  for (const auto& b : batch_sectors) {
    s[kBatches] += 1;
    s[kBatchSectors] += static_cast<double>(b.second);
  }
  s[kWarpIterations] += static_cast<double>(iterations.size());
}

// Traces blocks `sample` of a launch of `threads` threads per block: run_block(block, thread)
// runs the block, calling thread(t) before any code of thread t (before each phase of it, where the
// kernel has barriers).
template <typename BlockFn>
void trace_blocks(int threads, const std::vector<int64_t>& sample, BlockFn&& run_block,
                  double* s) {
  using rubiks::trace::Recorder;
  std::vector<Recorder> state(threads);
  std::vector<Event> warp;
  for (int64_t block : sample) {
    for (int t = 0; t < threads; ++t) state[t].reset(t);
    run_block(block, [&](int t) { rubiks::trace::current = &state[t]; });
    rubiks::trace::current = nullptr;
    std::unordered_set<uint64_t> block_loads, block_stores;
    for (int w = 0; w * 32 < threads; ++w) {
      warp.clear();
      for (int t = w * 32; t < std::min(threads, w * 32 + 32); ++t) {
        if (!state[t].events.empty()) s[kThreads] += 1;
        warp.insert(warp.end(), state[t].events.begin(), state[t].events.end());
      }
      warp_requests(warp, s, block_loads, block_stores);
    }
    s[kBlocks] += 1;
    s[kBlockLoadSectors] += static_cast<double>(block_loads.size());
    s[kBlockStoreSectors] += static_cast<double>(block_stores.size());
  }
}

// A zero-filled buffer of n elements at a 256-byte boundary, as cudaMalloc (and XLA's allocator)
// places device buffers: sector counts depend on the alignment.
template <typename T>
struct DeviceLike {
  std::vector<unsigned char> bytes;
  T* ptr;
  explicit DeviceLike(int64_t n)
      : bytes(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T) + 256) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(bytes.data());
    ptr = reinterpret_cast<T*>((at + 255) / 256 * 256);
  }
  T* data() { return ptr; }
};

int64_t tensor_elements(const Geometry& g, const int64_t* extent) {
  return g.n * extent[0] * extent[1] * extent[2] * g.c;
}

std::vector<int64_t> spread(int64_t blocks, int64_t max_blocks) {
  std::vector<int64_t> out;
  if (blocks <= 0) return out;
  const int64_t n = max_blocks <= 0 || max_blocks >= blocks ? blocks : max_blocks;
  for (int64_t i = 0; i < n; ++i) out.push_back(i * blocks / n);
  return out;
}

template <DType D>
int run(int kernel, int version, const Geometry& g, const float* shift_in, int64_t chunks,
        int64_t max_blocks, double* s) {
  DeviceLike<float> shift_copy(g.c * 3);
  std::copy(shift_in, shift_in + g.c * 3, shift_copy.data());
  const float* shift = shift_copy.data();
  using T = typename rubiks::Storage<D>::T;
  const bool adjoint = kernel == 1;
  const int64_t src_n = tensor_elements(g, adjoint ? g.out : g.in);
  const int64_t dst_n = tensor_elements(g, adjoint ? g.in : g.out);
  DeviceLike<T> src(src_n), dst(dst_n);
  if (kernel == 2) {  // shift gradient, pass 1: x (in), dy (out) -> partials
    DeviceLike<T> dy(dst_n);
    DeviceLike<float> partials(chunks * g.c * 3);
    const int64_t blocks = rubiks::partials_blocks(g, chunks);
    s[kLaunchBlocks] = static_cast<double>(blocks);
    rubiks::with_index_type(g, false, [&]<typename I>() {
      trace_blocks(rubiks::kThreads, spread(blocks, max_blocks),
                   [&](int64_t block, auto&& thread) {
                     for (int t = 0; t < rubiks::kThreads; ++t) {
                       thread(t);
                       rubiks::shift_grad_partials_thread<D, I>(src.data(), dy.data(), shift,
                                                                partials.data(), g, chunks, block,
                                                                t);
                     }
                   },
                   s);
    });
    return 0;
  }
  const rubiks::InterpolationPlan plan = rubiks::plan_interpolation(g, adjoint);
  if (plan.items == 0 || plan.width == 0) return 0;
  s[kLaunchBlocks] = static_cast<double>(plan.blocks);
  auto interpolation = [&]<bool kAdjoint>() {
    rubiks::with_interpolation_variant(g, false, [&]<bool kUnitW, typename I>() {
      if (version == 4) {
        const rubiks::V4Plan v4 = rubiks::plan_v4(g, kAdjoint);
        s[kLaunchBlocks] = static_cast<double>(v4.blocks);
        rubiks::V4Shared shared;
        trace_blocks(rubiks::kThreads, spread(v4.blocks, max_blocks),
                     [&](int64_t block, auto&& thread) {
                       rubiks::run_v4_block_on_host<D, kAdjoint, kUnitW, I>(
                           src.data(), shift, dst.data(), g, false, v4, block, shared, thread);
                     },
                     s);
        return;
      }
      trace_blocks(rubiks::kThreads, spread(plan.blocks, max_blocks),
                   [&](int64_t block, auto&& thread) {
                     for (int t = 0; t < rubiks::kThreads; ++t) {
                       thread(t);
                       if (version == 2)
                         rubiks::interpolate_thread<D, kAdjoint, kUnitW, I, false>(
                             src.data(), shift, dst.data(), g, false, plan, block, t);
                       else
                         rubiks::interpolate_thread<D, kAdjoint, kUnitW, I, true>(
                             src.data(), shift, dst.data(), g, false, plan, block, t);
                     }
                   },
                   s);
    });
  };
  if (adjoint)
    interpolation.template operator()<true>();
  else
    interpolation.template operator()<false>();
  return 0;
}

// Elements where v4 and v3 disagree bit for bit, interpolating random source values (kernel 0 or
// 1), every block of both launches. v4's shared memory starts each block as NaN (all ones), so a
// stage that misses a position the interpolation reads shows here.
template <DType D>
int64_t v4_mismatches(int kernel, const Geometry& g, const float* shift_in, bool quantize) {
  using T = typename rubiks::Storage<D>::T;
  const bool adjoint = kernel == 1;
  const int64_t src_n = tensor_elements(g, adjoint ? g.out : g.in);
  const int64_t dst_n = tensor_elements(g, adjoint ? g.in : g.out);
  DeviceLike<T> src(src_n), v3(dst_n), v4(dst_n);
  uint32_t state = 12345u;
  for (int64_t i = 0; i < src_n; ++i) {  // values in [-1, 1): any finite values would do
    state = state * 1664525u + 1013904223u;
    src.data()[i] = rubiks::Storage<D>::store(static_cast<float>(state >> 8) / 8388608.f - 1.f);
  }
  std::memset(v3.data(), 0xff, sizeof(T) * std::max<int64_t>(dst_n, 1));
  std::memset(v4.data(), 0xff, sizeof(T) * std::max<int64_t>(dst_n, 1));
  const rubiks::InterpolationPlan plan = rubiks::plan_interpolation(g, adjoint);
  if (plan.items == 0 || plan.width == 0) return 0;
  rubiks::trace::current = nullptr;
  auto both = [&]<bool kAdjoint>() {
    rubiks::with_interpolation_variant(g, false, [&]<bool kUnitW, typename I>() {
      for (int64_t b = 0; b < plan.blocks; ++b)
        for (int t = 0; t < rubiks::kThreads; ++t)
          rubiks::interpolate_thread<D, kAdjoint, kUnitW, I>(src.data(), shift_in, v3.data(), g,
                                                             quantize, plan, b, t);
      const rubiks::V4Plan p4 = rubiks::plan_v4(g, kAdjoint);
      rubiks::V4Shared shared;
      for (int64_t b = 0; b < p4.blocks; ++b)
        rubiks::run_v4_block_on_host<D, kAdjoint, kUnitW, I>(src.data(), shift_in, v4.data(), g,
                                                             quantize, p4, b, shared, [](int) {});
    });
  };
  if (adjoint)
    both.template operator()<true>();
  else
    both.template operator()<false>();
  int64_t differ = 0;
  for (int64_t i = 0; i < dst_n; ++i)
    differ += std::memcmp(v3.data() + i, v4.data() + i, sizeof(T)) != 0;
  return differ;
}

Geometry geometry_of(const int64_t* geometry) {
  Geometry g;
  g.n = geometry[0];
  for (int a = 0; a < 3; ++a) {
    g.in[a] = geometry[1 + a];
    g.out[a] = geometry[4 + a];
    g.stride[a] = geometry[8 + a];
    g.pad[a] = geometry[11 + a];
  }
  g.c = geometry[7];
  return g;
}

}  // namespace

extern "C" {

// Elements of the forward (kernel 0) or input gradient (1) where v4 differs from v3, or -1 for an
// unknown kernel or dtype. Arguments as rubiks_trace's.
int64_t rubiks_v4_mismatches(int kernel, int dtype, const int64_t* geometry, const float* shift,
                             int quantize) {
  if (kernel < 0 || kernel > 1 || dtype < 0 || dtype > 2) return -1;
  const Geometry g = geometry_of(geometry);
  switch (dtype) {
    case 0:
      return v4_mismatches<DType::kF32>(kernel, g, shift, quantize != 0);
    case 1:
      return v4_mismatches<DType::kBF16>(kernel, g, shift, quantize != 0);
    default:
      return v4_mismatches<DType::kF16>(kernel, g, shift, quantize != 0);
  }
}

int rubiks_trace_stat_count() { return kStatCount; }

// kernel: 0 forward, 1 input gradient, 2 shift gradient pass 1; version: 2, 3, 4 (v4 = v3's pass 1);
// dtype: 0 f32, 1 bf16, 2 f16; geometry: n, in[3], out[3], c, stride[3], pad[3] (14 values);
// shift: (c, 3) float32; chunks: the shift gradient's reduction chunks; max_blocks: blocks to
// trace, spread evenly over the launch (0: all). stats: kStatCount doubles, overwritten.
// Returns 0, or -1 for an unknown kernel, version or dtype.
int rubiks_trace(int kernel, int version, int dtype, const int64_t* geometry, const float* shift,
                 int64_t chunks, int64_t max_blocks, double* stats) {
  if (kernel < 0 || kernel > 2 || version < 2 || version > 4 || dtype < 0 || dtype > 2) return -1;
  const Geometry g = geometry_of(geometry);
  std::fill(stats, stats + kStatCount, 0.0);
  switch (dtype) {
    case 0:
      return run<DType::kF32>(kernel, version, g, shift, chunks, max_blocks, stats);
    case 1:
      return run<DType::kBF16>(kernel, version, g, shift, chunks, max_blocks, stats);
    default:
      return run<DType::kF16>(kernel, version, g, shift, chunks, max_blocks, stats);
  }
}

}  // extern "C"
