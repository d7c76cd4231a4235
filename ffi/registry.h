// Handler registry of one rpujax FFI module (_ffi_cpu or _ffi_cuda).
//
// Each .cc / .cu file of a module registers its own handlers at static-initialisation time:
//
//   XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxFoo, FooImpl, ffi::Ffi::Bind()...);
//   RPUJAX_FFI_REGISTER("rpujax_foo", RpujaxFoo);
//
// and the module's `registrations()` returns {name: PyCapsule} for all of them, so adding a handler
// file is one line in CMakeLists.txt (the module's source list) and nothing else. This relies on the
// object files being linked into the module directly (they are: nanobind_add_module gets the source
// list); do not move handler files into a static library, whose unreferenced objects the linker drops.
// Each module is a separate shared object, so the CPU and CUDA modules have separate registries.
#pragma once

#include <vector>

#include "xla/ffi/api/c_api.h"

namespace rpujax {
namespace ffi_registry {

struct Entry {
  const char* name;
  XLA_FFI_Handler* handler;
};

// A function-local static, so registration from any translation unit's static initialiser is safe
// in any order. The modules are built with hidden visibility, so each module has its own.
inline std::vector<Entry>& entries() {
  static std::vector<Entry> e;
  return e;
}

struct Registrar {
  Registrar(const char* name, XLA_FFI_Handler* handler) { entries().push_back(Entry{name, handler}); }
};

}  // namespace ffi_registry
}  // namespace rpujax

#define RPUJAX_FFI_CONCAT_INNER(a, b) a##b
#define RPUJAX_FFI_CONCAT(a, b) RPUJAX_FFI_CONCAT_INNER(a, b)
#define RPUJAX_FFI_REGISTER(name, symbol)                                        \
  static const ::rpujax::ffi_registry::Registrar RPUJAX_FFI_CONCAT(              \
      rpujax_ffi_registrar_, __LINE__)(name, symbol)
