#include "rubiks_shift_cpu_simd.h"
#include "rubiks_shift_module.h"

extern "C" XLA_FFI_Error* RubiksStreamNegateCpu(XLA_FFI_CallFrame* call_frame);

RUBIKS_SHIFT_MODULE(
    _rubiks_shift_cpu, Cpu, "", "RubiksShift XLA FFI handlers for the host (cpu) platform.",
    m.def(
        "simd_best", [] { return static_cast<int>(rubiks::cpu_simd_best()); },
        "The best vector level this CPU runs: 0 scalar, 1 AVX2 (with FMA and F16C), 2 AVX-512 "
        "(F, BW, VL, DQ).");
    m.def(
        "simd_level", [] { return static_cast<int>(rubiks::cpu_simd_isa()); },
        "The vector level the kernels use now (0 scalar, 1 AVX2, 2 AVX-512).");
    m.def("set_simd", &rubiks::set_cpu_simd, pybind11::arg("cap"),
          "Caps the vector level (0 scalar, 1 AVX2, 2 AVX-512; the default is 2 unless "
          "RUBIKS_JAX_CPU_SIMD=0 or avx2); returns the level used now.");
    m.def("set_channels_last", &rubiks::set_cpu_channels_last, pybind11::arg("on"),
          "Let the vectorised forward and input gradient run channels last where the shifts allow "
          "(True, the default) or always transpose (False); both give the same bits.");
    m.def(
        "channels_last_calls", [] { return rubiks::cpu_channels_last_calls().load(); },
        "How many forward / input-gradient calls ran the channels-last kernel so far.");
    m.def(
        "set_stream_min_bytes",
        [](int64_t bytes) { return rubiks::cpu_stream_min_bytes().exchange(bytes); },
        pybind11::arg("bytes"),
        "The vectorised forward and input gradient stream outputs of at least `bytes` bytes and "
        "store smaller ones plainly (same values); returns the previous threshold.");
    m.def(
        "bench_registrations",
        [] {
          pybind11::dict d;
          d[pybind11::str(rubiks::kStreamNegateTarget)] =
              rubiks::handler_capsule(RubiksStreamNegateCpu);
          return d;
        },
        "Targets of the benchmarks' instruments, not of the op: rubiks_jax_stream_negate (y = -x "
        "into a separate buffer, the op suite's memory floor).");)
