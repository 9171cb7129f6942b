// pybind11 module exposing the host emulation of the CUDA kernels (cuda_emulation.cc) as capsules
// for jax.ffi.register_ffi_target(..., platform="cpu"). Test-only targets: names end in
// "_cuda_emulation" and take one attribute more than the kernels (force_64bit).
#include <pybind11/pybind11.h>

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* RubiksShiftForwardCudaEmulation(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradInputCudaEmulation(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* RubiksShiftGradShiftCudaEmulation(XLA_FFI_CallFrame* call_frame);
}

namespace py = pybind11;

namespace {
template <typename Fn>
py::capsule capsule(Fn* fn) {
  return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_rubiks_shift_cuda_emulation, m) {
  m.doc() = "Host emulation of the RubiksShift CUDA kernels, as XLA FFI handlers for cpu.";
  m.def("registrations", []() {
    py::dict d;
    d["rubiks_shift_forward_cuda_emulation"] = capsule(RubiksShiftForwardCudaEmulation);
    d["rubiks_shift_grad_input_cuda_emulation"] = capsule(RubiksShiftGradInputCudaEmulation);
    d["rubiks_shift_grad_shift_cuda_emulation"] = capsule(RubiksShiftGradShiftCudaEmulation);
    return d;
  });
}
