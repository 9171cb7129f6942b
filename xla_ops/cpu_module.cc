#include "rubiks_shift_cpu_simd.h"
#include "rubiks_shift_module.h"

RUBIKS_SHIFT_MODULE(
    _rubiks_shift_cpu, Cpu, "", "RubiksShift XLA FFI handlers for the host (cpu) platform.",
    m.def("simd_supported", &rubiks::cpu_simd_supported,
          "Whether this CPU runs the AVX-512 kernels (forward, input and shift gradients at w "
          "stride 1).");
    m.def("set_simd", &rubiks::set_cpu_simd, pybind11::arg("on"),
          "Use the AVX-512 kernels where supported (True, the default unless RUBIKS_JAX_CPU_SIMD=0) "
          "or the scalar ones; returns whether the AVX-512 kernels are used now.");
    m.def("set_channels_last", &rubiks::set_cpu_channels_last, pybind11::arg("on"),
          "Let the AVX-512 forward and input gradient run channels last where the shifts allow "
          "(True, the default) or always transpose (False); both give the same bits.");
    m.def(
        "channels_last_calls", [] { return rubiks::cpu_channels_last_calls().load(); },
        "How many forward / input-gradient calls ran the channels-last kernel so far.");)
