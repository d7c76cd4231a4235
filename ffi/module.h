// The Python surface shared by the rpujax FFI modules (_ffi_cpu, _ffi_cuda).
//
//   registrations()   -> {target name: PyCapsule(XLA_FFI_Handler*)}, for jax.ffi.register_ffi_target
//   ffi_api_version() -> (major, minor) of the XLA FFI headers this module was compiled against
//   build_info()      -> dict describing the build (FFI API version, -march=native, compiler)
#pragma once

#include <nanobind/nanobind.h>

#include "registry.h"
#include "xla/ffi/api/c_api.h"

#ifndef RPUJAX_NATIVE_BUILD
#define RPUJAX_NATIVE_BUILD 0
#endif

namespace rpujax {

inline void define_ffi_module(nanobind::module_& m, const char* platform) {
  namespace nb = nanobind;
  m.def(
      "registrations",
      []() {
        nb::dict d;
        for (const auto& e : ffi_registry::entries()) d[e.name] = nb::capsule(reinterpret_cast<void*>(e.handler));
        return d;
      },
      "Dict of FFI target name -> PyCapsule holding the XLA_FFI_Handler*.");
  m.def(
      "ffi_api_version", []() { return nb::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR); },
      "(major, minor) XLA FFI API version of the headers this module was built with.");
  m.def(
      "build_info",
      [platform]() {
        nb::dict d;
        d["platform"] = platform;
        d["ffi_api_version"] = nb::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR);
        d["native"] = bool(RPUJAX_NATIVE_BUILD);
#if defined(__VERSION__)
        d["compiler"] = __VERSION__;
#endif
        return d;
      },
      "Build configuration of this module.");
}

}  // namespace rpujax
