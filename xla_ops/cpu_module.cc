// pybind11 module exposing the CPU handlers as capsules for jax.ffi.register_ffi_target.
#include <pybind11/pybind11.h>

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* RubiksShiftForwardCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradInputCpu(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradShiftCpu(XLA_FFI_CallFrame* call_frame);
}

namespace py = pybind11;

namespace {
template <typename Fn>
py::capsule capsule(Fn* fn) {
  return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_rubiks_shift_cpu, m) {
  m.doc() = "RubiksShift XLA FFI handlers for the host (cpu) platform.";
  m.def("registrations", []() {
    py::dict d;
    d["rubiks_shift_forward"] = capsule(RubiksShiftForwardCpu);
    d["rubiks_shift_grad_input"] = capsule(RubiksShiftGradInputCpu);
    d["rubiks_shift_grad_shift"] = capsule(RubiksShiftGradShiftCpu);
    return d;
  });
}
