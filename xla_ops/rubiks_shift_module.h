// The Python (pybind11) module of one platform's handlers: `registrations()` maps each target name
// to its XLA FFI handler as a capsule, for jax.ffi.register_ffi_target. Every platform's module
// file is one line, RUBIKS_SHIFT_MODULE(module, platform, target suffix, doc), so the target names
// (rubiks_shift_ffi.h) and the handler symbols (RubiksShift{Forward,GradInput,GradShift}<platform>,
// defined by XLA_FFI_DEFINE_HANDLER_SYMBOL in the platform's handler file) are spelled once.
#ifndef RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MODULE_H_
#define RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MODULE_H_

#include <pybind11/pybind11.h>

#include <string>

#include "rubiks_shift_ffi.h"
#include "xla/ffi/api/c_api.h"

namespace rubiks {

inline pybind11::capsule handler_capsule(XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*)) {
  return pybind11::capsule(reinterpret_cast<void*>(handler));
}

}  // namespace rubiks

// The trailing arguments, if any, are statements run with the module `m` in scope (more functions).
#define RUBIKS_SHIFT_MODULE(MODULE, PLATFORM, TARGET_SUFFIX, DOC, ...)                          \
  extern "C" {                                                                                  \
  XLA_FFI_Error* RubiksShiftForward##PLATFORM(XLA_FFI_CallFrame* call_frame);                   \
  XLA_FFI_Error* RubiksShiftGradInput##PLATFORM(XLA_FFI_CallFrame* call_frame);                 \
  XLA_FFI_Error* RubiksShiftGradShift##PLATFORM(XLA_FFI_CallFrame* call_frame);                 \
  }                                                                                             \
  PYBIND11_MODULE(MODULE, m) {                                                                  \
    m.doc() = DOC;                                                                              \
    m.def("registrations", []() {                                                               \
      const std::string suffix = TARGET_SUFFIX;                                                 \
      pybind11::dict d;                                                                         \
      d[pybind11::str(rubiks::kForwardTarget + suffix)] =                                       \
          rubiks::handler_capsule(RubiksShiftForward##PLATFORM);                                \
      d[pybind11::str(rubiks::kGradInputTarget + suffix)] =                                     \
          rubiks::handler_capsule(RubiksShiftGradInput##PLATFORM);                              \
      d[pybind11::str(rubiks::kGradShiftTarget + suffix)] =                                     \
          rubiks::handler_capsule(RubiksShiftGradShift##PLATFORM);                              \
      return d;                                                                                 \
    });                                                                                         \
    __VA_ARGS__                                                                                 \
  }

#endif  // RUBIKS_JAX_XLA_OPS_RUBIKS_SHIFT_MODULE_H_
