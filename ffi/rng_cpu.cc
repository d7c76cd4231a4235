// XLA:CPU handlers exposing the shared RNG (rng.h), so the tests can pin it to the JAX half
// (rpujax/_rng.py). See rng_ffi.h for the operands.
#include "registry.h"
#include "rng_ffi.h"

namespace ffi = xla::ffi;
using rpujax::rng_ffi::keyed_words;
using rpujax::rng_ffi::Layout;

namespace {

ffi::Error ThreefryImpl(ffi::Buffer<ffi::U32> key, ffi::Buffer<ffi::U32> c0, ffi::Buffer<ffi::U32> c1,
                        ffi::ResultBuffer<ffi::U32> y0, ffi::ResultBuffer<ffi::U32> y1) {
  Layout l;
  if (auto err = rpujax::rng_ffi::check_layout(key, c0, c1, &l); err.failure()) return err;
  for (int64_t e = 0; e < l.n; ++e) {
    const auto w = keyed_words(key.typed_data(), c0.typed_data(), c1.typed_data(), e, l.per_key);
    y0->typed_data()[e] = w.y0;
    y1->typed_data()[e] = w.y1;
  }
  return ffi::Error::Success();
}

ffi::Error NormalsImpl(ffi::Buffer<ffi::U32> key, ffi::Buffer<ffi::U32> c0, ffi::Buffer<ffi::U32> c1,
                       ffi::ResultBuffer<ffi::F32> z) {
  Layout l;
  if (auto err = rpujax::rng_ffi::check_layout(key, c0, c1, &l); err.failure()) return err;
  for (int64_t e = 0; e < l.n; ++e) {
    const auto w = keyed_words(key.typed_data(), c0.typed_data(), c1.typed_data(), e, l.per_key);
    z->typed_data()[e] = rpujax::rng::box_muller(w.y0, w.y1);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxThreefryCpu, ThreefryImpl,
                              ffi::Ffi::Bind()
                                  RPUJAX_RNG_OPERANDS
                                  .Ret<ffi::Buffer<ffi::U32>>()  // y0
                                  .Ret<ffi::Buffer<ffi::U32>>()  // y1
);
RPUJAX_FFI_REGISTER("rpujax_threefry", RpujaxThreefryCpu);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxBoxMullerNormalsCpu, NormalsImpl,
                              ffi::Ffi::Bind()
                                  RPUJAX_RNG_OPERANDS
                                  .Ret<ffi::Buffer<ffi::F32>>()  // z
);
RPUJAX_FFI_REGISTER("rpujax_box_muller_normals", RpujaxBoxMullerNormalsCpu);
