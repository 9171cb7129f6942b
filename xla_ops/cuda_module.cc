// pybind11 module exposing the CUDA handlers (rubiks_shift_cuda.cu) as capsules for
// jax.ffi.register_ffi_target(..., platform="CUDA"). Importing it needs no GPU: the CUDA runtime is
// linked statically and is first touched when a handler runs.
#include <pybind11/pybind11.h>

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* RubiksShiftForwardCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradInputCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradShiftCuda(XLA_FFI_CallFrame* call_frame);
}

namespace py = pybind11;

namespace {
template <typename Fn>
py::capsule capsule(Fn* fn) {
  return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_rubiks_shift_cuda, m) {
  m.doc() = "RubiksShift XLA FFI handlers for the CUDA platform.";
  // Target names are those of rubiks_shift_ffi.h (kForwardTarget, ...), shared with the cpu module.
  m.def("registrations", []() {
    py::dict d;
    d["rubiks_shift_forward"] = capsule(RubiksShiftForwardCuda);
    d["rubiks_shift_grad_input"] = capsule(RubiksShiftGradInputCuda);
    d["rubiks_shift_grad_shift"] = capsule(RubiksShiftGradShiftCuda);
    return d;
  });
}
