// Python module of the host emulation of the CUDA kernels (cuda_emulation.cc), for the tests: its
// targets run on the cpu platform, are named like the kernels' plus "_cuda_emulation", and take
// one attribute more (force_64bit).
#include "rubiks_shift_module.h"

RUBIKS_SHIFT_MODULE(_rubiks_shift_cuda_emulation, CudaEmulation, "_cuda_emulation",
                    "Host emulation of the RubiksShift CUDA kernels, as XLA FFI handlers for cpu.")
