// nanobind module rpujax._ffi_cuda: the XLA:CUDA FFI handlers of rpujax (register with platform "CUDA").
// The handlers live in .cu files (rng_cuda.cu, ...) and register themselves (registry.h).
#include "module.h"

NB_MODULE(_ffi_cuda, m) { rpujax::define_ffi_module(m, "CUDA"); }
