#include "rubiks_shift_cpu_simd.h"
#include "rubiks_shift_module.h"

RUBIKS_SHIFT_MODULE(
    _rubiks_shift_cpu, Cpu, "", "RubiksShift XLA FFI handlers for the host (cpu) platform.",
    m.def("simd_supported", &rubiks::cpu_simd_supported,
          "Whether this CPU runs the AVX-512 kernels (forward, input and shift gradients at w "
          "stride 1).");
    m.def("set_simd", &rubiks::set_cpu_simd, pybind11::arg("on"),
          "Use the AVX-512 kernels where supported (True, the default unless RUBIKS_JAX_CPU_SIMD=0) "
          "or the scalar ones; returns whether the AVX-512 kernels are used now.");)
