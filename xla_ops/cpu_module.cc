// Python module of the CPU handlers (rubiks_shift_cpu.cc).
#include "rubiks_shift_module.h"

RUBIKS_SHIFT_MODULE(_rubiks_shift_cpu, Cpu, "",
                    "RubiksShift XLA FFI handlers for the host (cpu) platform.")
