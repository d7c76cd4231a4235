// nanobind module rpujax._ffi_cpu: the XLA:CPU FFI handlers of rpujax.
// The handlers live in their own files (rng_cpu.cc, ...) and register themselves (registry.h).
#include "module.h"

NB_MODULE(_ffi_cpu, m) { rpujax::define_ffi_module(m, "cpu"); }
