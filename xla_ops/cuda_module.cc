// Python module of the CUDA handlers (rubiks_shift_cuda.cu). Importing it needs no GPU: the CUDA
// runtime is linked statically and first touched when a handler runs.
#include "rubiks_shift_module.h"

RUBIKS_SHIFT_MODULE(_rubiks_shift_cuda, Cuda, "",
                    "RubiksShift XLA FFI handlers for the CUDA platform.")
