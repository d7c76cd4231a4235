// Shared parts of the RNG test handlers (rng_cpu.cc, rng_cuda.cu): argument checks and the binding.
//
// rpujax_threefry(key, c0, c1) -> (y0, y1)
//     y0[e], y1[e] = threefry2x32(key[b, 0], key[b, 1], c0[e], c1[e])
// rpujax_box_muller_normals(key, c0, c1) -> z
//     z[e] = box_muller(threefry2x32(key[b, 0], key[b, 1], c0[e], c1[e]))
//
// key is uint32 (..., 2) holding K keys; c0 and c1 are uint32 arrays of n elements each (same
// shape); outputs have the shape of c0. Element e uses key b = e / (n / K). With K = 1 that is the
// plain call; under jax.vmap with vmap_method="broadcast_all" every operand carries the same leading
// batch dimensions, so b is exactly the batch index of element e (nested vmaps included).
#pragma once

#include <cstdint>
#include <string>

#include "rng.h"
#include "xla/ffi/api/ffi.h"

namespace rpujax {
namespace rng_ffi {

namespace ffi = xla::ffi;

// The operands of both rng handlers (key (..., 2), c0, c1), shared by the CPU and CUDA bindings.
#define RPUJAX_RNG_OPERANDS                                           \
  .Arg<::xla::ffi::Buffer<::xla::ffi::U32>>() /* key (..., 2) */ \
      .Arg<::xla::ffi::Buffer<::xla::ffi::U32>>() /* c0 */        \
      .Arg<::xla::ffi::Buffer<::xla::ffi::U32>>() /* c1 */

struct Layout {
  int64_t n;        // elements per output
  int64_t per_key;  // elements per key (n / K); 0 when n == 0
};

template <typename Key, typename C>
inline ffi::Error check_layout(const Key& key, const C& c0, const C& c1, Layout* out) {
  const auto kd = key.dimensions();
  if (kd.size() < 1 || kd.back() != 2) {
    return ffi::Error::InvalidArgument("rpujax rng: key must have shape (..., 2) uint32");
  }
  const int64_t nkeys = static_cast<int64_t>(key.element_count()) / 2;
  const int64_t n = static_cast<int64_t>(c0.element_count());
  if (static_cast<int64_t>(c1.element_count()) != n) {
    return ffi::Error::InvalidArgument("rpujax rng: c0 and c1 must have the same number of elements, got " +
                                       std::to_string(n) + " and " + std::to_string(c1.element_count()));
  }
  if (nkeys == 0 || n % nkeys != 0) {
    return ffi::Error::InvalidArgument("rpujax rng: " + std::to_string(n) + " counters cannot be split over " +
                                       std::to_string(nkeys) + " keys");
  }
  out->n = n;
  out->per_key = n / nkeys;
  return ffi::Error::Success();
}

// The threefry words of element e (key block e / per_key); shared by the CPU and CUDA handlers.
RPUJAX_HD rng::Words keyed_words(const uint32_t* key, const uint32_t* c0, const uint32_t* c1, int64_t e,
                                 int64_t per_key) {
  const int64_t kb = 2 * (e / per_key);
  return rng::threefry2x32(key[kb], key[kb + 1], c0[e], c1[e]);
}

}  // namespace rng_ffi
}  // namespace rpujax
