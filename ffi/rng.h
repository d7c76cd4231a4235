// rpujax counter-based random numbers: the one generator shared by the CPU and CUDA kernels.
//
// This header is the C++/CUDA half of the project-wide RNG contract; rpujax/_rng.py is the JAX
// half and the two must stay bit-identical (tests/test_ffi.py pins them together):
//
//   threefry2x32(k0, k1, c0, c1) -> (y0, y1)
//       Threefry-2x32, 20 rounds, Random123 rotation constants, exactly
//       jax.extend.random.threefry2x32_p.bind(k0, k1, c0, c1).
//   uniform24(w)       = float(w >> 8) * 2^-24                      in [0, 1)
//   box_muller(w0, w1) = sqrtf(-2 logf(u1)) * cosf(2pi u2),
//       u1 = float((w0 >> 8) + 1) * 2^-24 in (0, 1],  u2 = float(w1 >> 8) * 2^-24 in [0, 1)
//       (float32 throughout; 2pi is the float constant 6.2831853f == 0x40C90FDB)
//   sample_key(k0, k1, b) = threefry2x32(k0, k1, 0, b)              per-sample key
//   stream_c0(purpose, sub) = (purpose << 28) | sub                  counter word c0
//
// Streams (c0 = stream_c0(purpose, sub), c1 as listed), keyed by the per-sample key:
//   kXBit        sub = pulse position k,  c1 = column j
//   kDBit        sub = pulse position k,  c1 = row i
//   kPulseNormal sub = pulse number t,    c1 = i * X + j
//   kSumNormal   sub = 0,                 c1 = i * X + j
//   kWriteNoise  sub = 0,                 c1 = i * X + j
//
// The conversions go through int32 on purpose: the value fits in 24 bits, so the result is the same,
// and gcc emits a single cvtdq2ps for int32 -> float but a slow multi-instruction sequence (or a
// scalar loop) for uint32 -> float on targets without AVX-512.
//
// Do not compile users of this header with -ffast-math / --use_fast_math: logf/cosf must be the
// library functions for the CPU and CUDA kernels to agree to rounding.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RPUJAX_HD __host__ __device__ __forceinline__
#else
#define RPUJAX_HD inline __attribute__((always_inline))
#endif

namespace rpujax {
namespace rng {

// ---- stream purposes (bits 28..31 of c0) -------------------------------------------------------
constexpr uint32_t kPurposeShift = 28;
constexpr uint32_t kSubMask = (uint32_t{1} << kPurposeShift) - 1u;  // sub must fit in 28 bits

constexpr uint32_t kXBit = 1;
constexpr uint32_t kDBit = 2;
constexpr uint32_t kPulseNormal = 3;
constexpr uint32_t kSumNormal = 4;
constexpr uint32_t kWriteNoise = 5;

RPUJAX_HD constexpr uint32_t stream_c0(uint32_t purpose, uint32_t sub) {
  return (purpose << kPurposeShift) | sub;
}

// ---- Threefry-2x32-20 --------------------------------------------------------------------------
struct Words {
  uint32_t y0;
  uint32_t y1;
};

RPUJAX_HD uint32_t rotl32(uint32_t v, unsigned r) { return (v << r) | (v >> (32u - r)); }

#define RPUJAX_TF_ROUND(r) \
  do {                     \
    x0 += x1;              \
    x1 = rotl32(x1, r);    \
    x1 ^= x0;              \
  } while (0)

// Five groups of four rounds with a key injection after each group (Random123 / JAX schedule).
RPUJAX_HD Words threefry2x32(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1) {
  const uint32_t k2 = k0 ^ k1 ^ 0x1BD11BDAu;
  uint32_t x0 = c0 + k0;
  uint32_t x1 = c1 + k1;
  RPUJAX_TF_ROUND(13); RPUJAX_TF_ROUND(15); RPUJAX_TF_ROUND(26); RPUJAX_TF_ROUND(6);
  x0 += k1; x1 += k2 + 1u;
  RPUJAX_TF_ROUND(17); RPUJAX_TF_ROUND(29); RPUJAX_TF_ROUND(16); RPUJAX_TF_ROUND(24);
  x0 += k2; x1 += k0 + 2u;
  RPUJAX_TF_ROUND(13); RPUJAX_TF_ROUND(15); RPUJAX_TF_ROUND(26); RPUJAX_TF_ROUND(6);
  x0 += k0; x1 += k1 + 3u;
  RPUJAX_TF_ROUND(17); RPUJAX_TF_ROUND(29); RPUJAX_TF_ROUND(16); RPUJAX_TF_ROUND(24);
  x0 += k1; x1 += k2 + 4u;
  RPUJAX_TF_ROUND(13); RPUJAX_TF_ROUND(15); RPUJAX_TF_ROUND(26); RPUJAX_TF_ROUND(6);
  x0 += k2; x1 += k0 + 5u;
  return Words{x0, x1};
}

#undef RPUJAX_TF_ROUND

RPUJAX_HD Words sample_key(uint32_t k0, uint32_t k1, uint32_t b) { return threefry2x32(k0, k1, 0u, b); }

// ---- transforms --------------------------------------------------------------------------------
constexpr float kTwoNeg24 = 5.9604644775390625e-08f;  // 2^-24, exact
constexpr float kTwoPi = 6.2831853f;                  // float(2pi) == 0x40C90FDB

RPUJAX_HD float uniform24(uint32_t w) { return static_cast<float>(static_cast<int32_t>(w >> 8)) * kTwoNeg24; }

RPUJAX_HD float box_muller(uint32_t w0, uint32_t w1) {
  const float u1 = static_cast<float>(static_cast<int32_t>((w0 >> 8) + 1u)) * kTwoNeg24;  // (0, 1]
  const float u2 = static_cast<float>(static_cast<int32_t>(w1 >> 8)) * kTwoNeg24;         // [0, 1)
  return sqrtf(-2.0f * logf(u1)) * cosf(kTwoPi * u2);
}

}  // namespace rng
}  // namespace rpujax
