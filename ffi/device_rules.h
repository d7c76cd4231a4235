// Single-pulse rules of the rpujax pulsed devices, shared by the CPU and CUDA kernels.
//
// Contract: ffi/README.md §3 (parameter/scalar packing per kind, ConstantStep summed form and its
// guard, write noise); formulas: spec tile-core §4. The JAX side is rpujax/devices/ (one `pulse`
// per device); every expression here mirrors the JAX expression in the same order of operations,
// so the two agree to float rounding. Float32 throughout.
//
// Lanes. Every rule and math function is a template over a lane policy `Ln` that supplies the value
// types (Ln::F float values, Ln::I int32 values, Ln::M masks) and the few operations that are not
// plain C++ operators (bit casts, sqrt, fma, rint, gather). `ScalarLanes` (below) is one float per
// call: the CUDA kernel runs it per thread. The CPU kernel instantiates the same templates with
// GCC vector types (ffi/pulsed_cpu.cc), so the rules exist once and the CPU code is SIMD by
// construction, not by the auto-vectoriser's mood. Hence the style: no branches on per-element
// data, only `mask ? a : b` selects, and arithmetic / comparisons that read the same for a float
// and for a vector of floats.
//
// Math. The normals are rng::box_muller's definition (same words, same formula) computed with the
// polynomial log / cos below instead of libm's logf / cosf: libm calls do not vectorise, and the
// normals are nearly the whole cost of the kernel (shared notes: cpu-pulsed-update-floor.md). The
// polynomial coefficients were fitted for this file (near-minimax least squares). Measured over
// all 2^24 values of each Box-Muller input: log within 0.87 ulp, cos within 9.3e-8 absolute, the
// normal within 6.5e-7 absolute (~1.3 ulp at |z| = 5.77); exp within 1.01 ulp over [-100, 88].
// That is as close as XLA's own log / cos, which the pure-JAX path uses, so the two paths agree to
// float rounding (tests/test_pulsed_backends.py), not bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "rng.h"

#if defined(__CUDACC__)
#define RPUJAX_RULE __host__ __device__ __forceinline__
#else
#define RPUJAX_RULE inline __attribute__((always_inline))
#endif

namespace rpujax {
namespace rules {

// ---- device kinds (ffi/README.md §3) -------------------------------------------------------------
constexpr int kConstantStep = 0;
constexpr int kLinearStep = 1;  // LinearStep, SoftBounds, SoftBoundsPmax
constexpr int kExpStep = 2;
constexpr int kPowStep = 3;
constexpr int kPowStepReference = 4;
constexpr int kSoftBoundsReference = 5;
constexpr int kPiecewiseStep = 6;
constexpr int kNumKinds = 7;

// Number of per-element parameter planes of each kind.
RPUJAX_RULE constexpr int num_params(int kind) {
  return kind == kConstantStep          ? 4
         : kind == kLinearStep          ? 6
         : kind == kExpStep             ? 4
         : kind == kPowStep             ? 6
         : kind == kPowStepReference    ? 7
         : kind == kSoftBoundsReference ? 5
         : kind == kPiecewiseStep       ? 4
                                        : -1;
}
constexpr int kMaxParams = 7;

// Whether the kind supports write noise (persistent weights), spec §4.11.
RPUJAX_RULE constexpr bool supports_write_noise(int kind) {
  return kind == kLinearStep || kind == kExpStep || kind == kPowStep || kind == kSoftBoundsReference ||
         kind == kPiecewiseStep;
}

// Largest |normal| of the Box-Muller transform: sqrt(-2 ln 2^-24) (u1 >= 2^-24, |cos| <= 1).
// A double: the JAX side computes the guard factor 1 + XI_MAX * sigma in Python doubles.
constexpr double kXiMax = 5.768107546403532;

constexpr int kMaxPiecewiseNodes = 64;

// Tile-wide constants of one call, derived on the host from the `scalars` attribute (doubles, as the
// JAX side holds them in Python floats). A value that meets per-element arrays in JAX is rounded to
// float32 once (weak typing); a value that JAX folds in Python first is folded in double here.
struct Consts {
  int kind;
  float sigma;         // dw_min_std
  bool needs_normal;   // sigma != 0; otherwise every xi is multiplied by 0 and is not drawn
  float guard_factor;  // ConstantStep: float(1 + XI_MAX * sigma)
  bool mult_noise;     // kinds 1, 5
  float write_noise;   // kinds 1, 2, 3, 5, 6 (0: none)
  // ExpStep
  float A_up, A_down, gamma_up, gamma_down, a, b, std_add, std_slope;
  bool complex_noise;
  // PiecewiseStep: up nodes at [0, n_nodes), down nodes at [kMaxPiecewiseNodes, + n_nodes)
  int n_nodes;
  float nodes[2 * kMaxPiecewiseNodes];
};

// Number of scalars of each kind (PiecewiseStep: at least; 3 + 2 n_nodes exactly).
RPUJAX_RULE constexpr int num_scalars(int kind) {
  return kind == kConstantStep          ? 1
         : kind == kLinearStep          ? 3
         : kind == kExpStep             ? 10
         : kind == kPowStep             ? 2
         : kind == kPowStepReference    ? 1
         : kind == kSoftBoundsReference ? 3
         : kind == kPiecewiseStep       ? 3
                                        : -1;
}

// Fills `out` from the scalars (ffi/README.md §3 order); returns nullptr, or what is wrong.
inline const char* make_consts(int kind, const double* s, int64_t n, Consts* out) {
  std::memset(out, 0, sizeof(Consts));
  if (kind < 0 || kind >= kNumKinds) return "unknown device kind";
  if (n < num_scalars(kind)) return "too few scalars for this device kind";
  out->kind = kind;
  out->sigma = static_cast<float>(s[0]);
  out->needs_normal = s[0] != 0.0;
  out->guard_factor = static_cast<float>(1.0 + kXiMax * s[0]);
  switch (kind) {
    case kConstantStep:
    case kPowStepReference:
      if (n != 1) return "expected exactly 1 scalar (dw_min_std)";
      break;
    case kLinearStep:
    case kSoftBoundsReference:
      if (n != 3) return "expected 3 scalars (dw_min_std, mult_noise, write_noise)";
      out->mult_noise = s[1] != 0.0;
      out->write_noise = static_cast<float>(s[2]);
      break;
    case kExpStep:
      if (n != 10) return "expected 10 scalars for ExpStep";
      out->A_up = static_cast<float>(s[1]);
      out->A_down = static_cast<float>(s[2]);
      out->gamma_up = static_cast<float>(s[3]);
      out->gamma_down = static_cast<float>(s[4]);
      out->a = static_cast<float>(s[5]);
      out->b = static_cast<float>(s[6]);
      out->std_add = static_cast<float>(s[7]);
      out->std_slope = static_cast<float>(s[8]);
      out->write_noise = static_cast<float>(s[9]);
      out->complex_noise = s[0] > 0.0 && (s[7] != 0.0 || s[8] != 0.0);
      break;
    case kPowStep:
      if (n != 2) return "expected 2 scalars (dw_min_std, write_noise)";
      out->write_noise = static_cast<float>(s[1]);
      break;
    case kPiecewiseStep: {
      const double nn = s[2];
      if (!(nn >= 1.0) || nn > kMaxPiecewiseNodes || nn != static_cast<double>(static_cast<int>(nn)))
        return "PiecewiseStep: n_nodes must be an integer in [1, 64]";
      const int m = static_cast<int>(nn);
      if (n != 3 + 2 * m) return "PiecewiseStep: expected 3 + 2 * n_nodes scalars";
      out->write_noise = static_cast<float>(s[1]);
      out->n_nodes = m;
      for (int q = 0; q < m; ++q) {
        out->nodes[q] = static_cast<float>(s[3 + q]);
        out->nodes[kMaxPiecewiseNodes + q] = static_cast<float>(s[3 + m + q]);
      }
      break;
    }
    default:
      break;
  }
  return nullptr;
}

// ---- the scalar lane policy ----------------------------------------------------------------------
struct ScalarLanes {
  using F = float;
  using I = int32_t;
  using M = bool;

  RPUJAX_RULE static F splat(float v) { return v; }
  RPUJAX_RULE static I splat_i(int32_t v) { return v; }
  RPUJAX_RULE static I as_int(F f) {
#if defined(__CUDA_ARCH__)
    return __float_as_int(f);
#else
    I i;
    std::memcpy(&i, &f, sizeof(i));
    return i;
#endif
  }
  RPUJAX_RULE static F as_float(I i) {
#if defined(__CUDA_ARCH__)
    return __int_as_float(i);
#else
    F f;
    std::memcpy(&f, &i, sizeof(f));
    return f;
#endif
  }
  RPUJAX_RULE static F to_f(I i) { return static_cast<F>(i); }
  RPUJAX_RULE static I to_i(F f) { return static_cast<I>(f); }  // truncation
  RPUJAX_RULE static F sqrt(F x) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(x);
#else
    return __builtin_sqrtf(x);
#endif
  }
  // a * b + c with one rounding where the hardware has FMA (CUDA; x86 with FMA), so that CPU and
  // CUDA evaluate the polynomials identically.
  RPUJAX_RULE static F fma(F a, F b, F c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#elif defined(__FMA__) || defined(__aarch64__)
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
  }
  RPUJAX_RULE static F rint(F x) {  // round half to even
#if defined(__CUDA_ARCH__)
    return rintf(x);
#else
    return __builtin_rintf(x);
#endif
  }
  RPUJAX_RULE static F abs(F x) { return as_float(as_int(x) & 0x7fffffff); }
  RPUJAX_RULE static F gather(const float* table, I i) { return table[i]; }
};

// ---- math (templates over the lane policy) -------------------------------------------------------
namespace fm {

constexpr int32_t kInfBits = 0x7f800000;
constexpr int32_t kNanBits = 0x7fc00000;

template <class Ln>
RPUJAX_RULE typename Ln::F cmax(typename Ln::F a, typename Ln::F b) {
  return a > b ? a : b;  // C's MAX: a NaN first argument gives b (rpujax.devices.base.cmax)
}
template <class Ln>
RPUJAX_RULE typename Ln::F cmin(typename Ln::F a, typename Ln::F b) {
  return a < b ? a : b;
}

// Natural log for x > 0 (0 -> -inf, x < 0 or NaN -> NaN, +inf -> +inf). x = 2^e m with
// m in [sqrt(1/2), sqrt(2)); log(m) = f - f^2/2 + f^3 P(f), f = m - 1.
template <class Ln>
RPUJAX_RULE typename Ln::F log(typename Ln::F x) {
  using F = typename Ln::F;
  using I = typename Ln::I;
  const F inf = Ln::as_float(Ln::splat_i(kInfBits));
  const auto tiny = x < 1.17549435e-38f;  // subnormal (or <= 0): scale by 2^24 first
  const F xs = tiny ? x * 16777216.0f : x;
  const I ix = Ln::as_int(xs);
  const I e = (ix - 0x3f3504f3) >> 23;
  const F m = Ln::as_float(ix - (e << 23));
  const F f = m - 1.0f;
  F p = Ln::fma(Ln::splat(-0.07634225739520353f), f, Ln::splat(0.12761468263488057f));
  p = Ln::fma(p, f, Ln::splat(-0.1316023371466157f));
  p = Ln::fma(p, f, Ln::splat(0.14201776209516973f));
  p = Ln::fma(p, f, Ln::splat(-0.16623353848616676f));
  p = Ln::fma(p, f, Ln::splat(0.200012260246367f));
  p = Ln::fma(p, f, Ln::splat(-0.2500082112264116f));
  p = Ln::fma(p, f, Ln::splat(0.33333331715850556f));
  const F f2 = f * f;
  const F ef = Ln::to_f(e) - (tiny ? Ln::splat(24.0f) : Ln::splat(0.0f));
  // ln 2 = 0.693115234375 (12 bits: ef * hi is exact) + 3.194618329871446e-05
  F r = Ln::fma(f2 * f, p, ef * 3.194618329871446e-05f);
  r = Ln::fma(f2, Ln::splat(-0.5f), r);
  r = r + f;
  r = Ln::fma(ef, Ln::splat(0.693115234375f), r);
  r = x == 0.0f ? -inf : r;
  r = (x < 0.0f) | (x != x) ? Ln::as_float(Ln::splat_i(kNanBits)) : r;
  return x == inf ? x : r;
}

// cos(a) for 0 <= a <= 7 (the Box-Muller angle 6.2831853f * u2): a = j pi/2 + r, |r| <= pi/4, with
// a three-part pi/2 whose first two parts have 12 bits, so j * part is exact for j <= 4.
template <class Ln>
RPUJAX_RULE typename Ln::F cos_small(typename Ln::F a) {
  using F = typename Ln::F;
  using I = typename Ln::I;
  const F j = Ln::rint(a * 0.6366197466850281f);
  F r = a - j * 1.57080078125f;
  r = r - j * -4.453584551811218e-06f;
  r = r - j * -8.705516307827565e-10f;
  const F r2 = r * r;
  // sin r = r + r^3 S(r^2);  cos r = 1 - r^2/2 + r^4 C(r^2)
  F s = Ln::fma(r2, Ln::splat(-0.00019515278940684271f), Ln::splat(0.008332160722675213f));
  s = Ln::fma(s, r2, Ln::splat(-0.16666654608708065f));
  const F sn = Ln::fma(r2 * r, s, r);
  F c = Ln::fma(r2, Ln::splat(2.4433149620979853e-05f), Ln::splat(-0.0013887316179355233f));
  c = Ln::fma(c, r2, Ln::splat(0.0416666456811436f));
  const F cs = Ln::fma(r2 * r2, c, Ln::fma(Ln::splat(-0.5f), r2, Ln::splat(1.0f)));
  const I q = Ln::to_i(j);
  // cos(j pi/2 + r) = cos r, -sin r, -cos r, sin r for j mod 4 = 0, 1, 2, 3: the sine where j is
  // odd, the sign bit set where j mod 4 is 1 or 2, i.e. where bit 1 of j + 1 is set
  const F v = (q & 1) != 0 ? sn : cs;
  return Ln::as_float(Ln::as_int(v) ^ (((q + 1) & 2) << 30));
}

// exp(x), float32; overflow -> +inf, underflow -> 0 (through the subnormals), NaN -> NaN.
template <class Ln>
RPUJAX_RULE typename Ln::F exp(typename Ln::F x) {
  using F = typename Ln::F;
  using I = typename Ln::I;
  const F xc = cmin<Ln>(cmax<Ln>(x, Ln::splat(-110.0f)), Ln::splat(89.0f));
  const F k = Ln::rint(xc * 1.4426950216293335f);
  F r = xc - k * 0.693115234375f;  // ln 2 split as in log(): k * hi is exact for |k| < 2^12
  r = r - k * 3.194618329871446e-05f;
  F p = Ln::fma(r, Ln::splat(0.0013814604480101688f), Ln::splat(0.008368710654733104f));
  p = Ln::fma(p, r, Ln::splat(0.0416683875446192f));
  p = Ln::fma(p, r, Ln::splat(0.16666520680903718f));
  p = Ln::fma(p, r, Ln::splat(0.4999999345079664f));
  const F er = Ln::fma(r * r, p, r) + 1.0f;
  // 2^k as two factors, so that k from -160 (subnormal results) to 128 stays representable
  const I ki = Ln::to_i(k);
  const I k1 = ki >> 1;
  const I k2 = ki - k1;
  F v = er * Ln::as_float((k1 + 127) << 23) * Ln::as_float((k2 + 127) << 23);
  v = x > 88.72283935546875f ? Ln::as_float(Ln::splat_i(kInfBits)) : v;
  return x != x ? x : v;
}

// x^y for x >= 0 as jnp.power: 0^y = 0 (y > 0), 1 (y == 0), inf (y < 0); x < 0 -> NaN.
template <class Ln>
RPUJAX_RULE typename Ln::F pow_nonneg(typename Ln::F x, typename Ln::F y) {
  using F = typename Ln::F;
  const F one = Ln::splat(1.0f);
  const F v = exp<Ln>(y * log<Ln>(x));
  const F zero = y > 0.0f ? Ln::splat(0.0f) : (y == 0.0f ? one : Ln::as_float(Ln::splat_i(kInfBits)));
  const F r = x == 0.0f ? zero : v;
  return (y == 0.0f) & (x == x) ? one : r;
}

// log(u) for u in [2^-24, 1], the Box-Muller range: log() without the special cases.
template <class Ln>
RPUJAX_RULE typename Ln::F log_unit(typename Ln::F x) {
  using F = typename Ln::F;
  using I = typename Ln::I;
  const I ix = Ln::as_int(x);
  const I e = (ix - 0x3f3504f3) >> 23;
  const F f = Ln::as_float(ix - (e << 23)) - 1.0f;
  F p = Ln::fma(Ln::splat(-0.07634225739520353f), f, Ln::splat(0.12761468263488057f));
  p = Ln::fma(p, f, Ln::splat(-0.1316023371466157f));
  p = Ln::fma(p, f, Ln::splat(0.14201776209516973f));
  p = Ln::fma(p, f, Ln::splat(-0.16623353848616676f));
  p = Ln::fma(p, f, Ln::splat(0.200012260246367f));
  p = Ln::fma(p, f, Ln::splat(-0.2500082112264116f));
  p = Ln::fma(p, f, Ln::splat(0.33333331715850556f));
  const F f2 = f * f;
  const F ef = Ln::to_f(e);
  F r = Ln::fma(f2 * f, p, ef * 3.194618329871446e-05f);
  r = Ln::fma(f2, Ln::splat(-0.5f), r);
  r = r + f;
  return Ln::fma(ef, Ln::splat(0.693115234375f), r);
}

// The two halves of the Box-Muller transform of rng.h (same definition, the functions above), from
// the top 24 bits of the two words: -2 ln u1 with u1 = (top24(y0) + 1) 2^-24 in (0, 1], and
// cos(2pi u2) with u2 = top24(y1) 2^-24 in [0, 1). normal = sqrt(radius2) * angle.
template <class Ln>
RPUJAX_RULE typename Ln::F bm_radius2(typename Ln::I y0_top24_plus1) {
  return -2.0f * log_unit<Ln>(Ln::to_f(y0_top24_plus1) * rng::kTwoNeg24);
}
// 2pi * (top24 * 2^-24) in one product: scaling by 2^-24 is exact, so top24 * (2pi 2^-24) rounds
// the same real number as the contract's two products, to the same float.
template <class Ln>
RPUJAX_RULE typename Ln::F bm_angle(typename Ln::I y1_top24) {
  return cos_small<Ln>(Ln::to_f(y1_top24) * (rng::kTwoPi * rng::kTwoNeg24));
}

// The Box-Muller normal.
template <class Ln>
RPUJAX_RULE typename Ln::F normal(typename Ln::I y0_top24_plus1, typename Ln::I y1_top24) {
  return Ln::sqrt(bm_radius2<Ln>(y0_top24_plus1)) * bm_angle<Ln>(y1_top24);
}

// sqrt(n) * normal with one square root: sqrt(n (-2 ln u1)) cos(2pi u2). Equal to
// sqrt(n) * normal(...) up to float rounding (about 1 ulp); the square root is the most expensive
// instruction of the CPU kernel's summed form.
template <class Ln>
RPUJAX_RULE typename Ln::F sqrt_n_normal(typename Ln::F nf, typename Ln::I y0_top24_plus1,
                                         typename Ln::I y1_top24) {
  return Ln::sqrt(nf * bm_radius2<Ln>(y0_top24_plus1)) * bm_angle<Ln>(y1_top24);
}

}  // namespace fm

// The Box-Muller normal of the words (y0, y1) of one Threefry call (scalar).
RPUJAX_RULE float normal_of(rng::Words y) {
  return fm::normal<ScalarLanes>(static_cast<int32_t>((y.y0 >> 8) + 1u), static_cast<int32_t>(y.y1 >> 8));
}

template <class Ln>
RPUJAX_RULE typename Ln::F clip(typename Ln::F w, typename Ln::F lo, typename Ln::F hi) {
  return fm::cmin<Ln>(fm::cmax<Ln>(w, lo), hi);  // rpujax.devices.base.clip_bounds
}

// ---- single-pulse rules ------------------------------------------------------------------------
// Rule<KIND>::pulse<Ln>(k, w, p, down, xi): one pulse of direction `down` on weight w with the
// element's parameters p[0..num_params(KIND)) (order of ffi/README.md §3) and cycle-to-cycle normal
// xi, followed by the clip. Mirrors `pulse` of the matching rpujax/devices module.
template <int KIND>
struct Rule;

// ConstantStep (§4.4): w -/+ s (1 + sigma xi)
template <>
struct Rule<kConstantStep> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3];
    const F noise = 1.0f + k.sigma * xi;
    const F v = down ? w - s_down * noise : w + s_up * noise;
    return clip<Ln>(v, b_min, b_max);
  }
};

// LinearStep / SoftBounds (§4.5, §4.6)
template <>
struct Rule<kLinearStep> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3], slope_up = p[4], slope_down = p[5];
    const F noise = 1.0f + k.sigma * xi;
    F v;
    if (k.mult_noise) {
      v = down ? w - (slope_down * w + s_down) * noise : w + (slope_up * w + s_up) * noise;
    } else {
      v = down ? w - slope_down * w - s_down * noise : w + slope_up * w + s_up * noise;
    }
    return clip<Ln>(v, b_min, b_max);
  }
};

// ExpStep (§4.7); no change at all (not even the clip) where b_max - b_min <= 0.
template <>
struct Rule<kExpStep> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3];
    const F range = b_max - b_min;
    const M active = range > 0.0f;
    const F z = (2.0f * w / (active ? range : Ln::splat(1.0f))) * k.a + k.b;
    const F y_dn = fm::cmax<Ln>(1.0f - k.A_down * fm::exp<Ln>(-k.gamma_down * z), Ln::splat(0.0f));
    const F y_up = fm::cmax<Ln>(1.0f - k.A_up * fm::exp<Ln>(k.gamma_up * z), Ln::splat(0.0f));
    const F delta = down ? -y_dn * s_down : y_up * s_up;
    F v;
    if (k.complex_noise) {
      v = w + delta + k.sigma * (Ln::abs(delta) + k.std_add + k.std_slope * Ln::abs(w)) * xi;
    } else {
      v = w + delta * (1.0f + k.sigma * xi);
    }
    return active ? clip<Ln>(v, b_min, b_max) : w;
  }
};

// The PowStep rule on c (kinds 3 and 4); no change (not even the clip) where the bounds coincide.
template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
RPUJAX_RULE F pow_step(const Consts& k, F c, const F* p, M down, F xi) {
  const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3], g_up = p[4], g_down = p[5];
  const F range = b_max - b_min;
  const M active = range != 0.0f;
  const F rs = active ? range : Ln::splat(1.0f);
  const F noise = 1.0f + k.sigma * xi;
  const F base = down ? (c - b_min) / rs : (b_max - c) / rs;
  const F pw = fm::pow_nonneg<Ln>(base, down ? g_down : g_up);
  const F v = down ? c - s_down * pw * noise : c + s_up * pw * noise;
  return active ? clip<Ln>(v, b_min, b_max) : c;
}

// PowStep (§4.8)
template <>
struct Rule<kPowStep> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    return pow_step<Ln>(k, w, p, down, xi);
  }
};

// PowStepReference (§4.9): the PowStep rule on c = w + reference, w = c - reference; w itself is
// returned (no round trip through c) where the bounds coincide.
template <>
struct Rule<kPowStepReference> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    const F ref = p[6];
    const F c = pow_step<Ln>(k, w + ref, p, down, xi);
    return p[0] - p[1] != 0.0f ? c - ref : w;
  }
};

// SoftBoundsReference (§4.6): on c = w + reference, clip c, w = c - reference.
template <>
struct Rule<kSoftBoundsReference> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3], ref = p[4];
    const F zero = Ln::splat(0.0f);
    const F c = w + ref;
    const F a_up = b_max > 0.0f ? c / (b_max > 0.0f ? b_max : Ln::splat(1.0f)) : zero;
    const F a_dn = b_min < 0.0f ? c / (b_min < 0.0f ? b_min : Ln::splat(-1.0f)) : zero;
    F v;
    if (k.mult_noise) {
      const F noise = 1.0f + k.sigma * xi;
      v = down ? c - s_down * (1.0f - a_dn) * noise : c + s_up * (1.0f - a_up) * noise;
    } else {
      v = down ? c - s_down * (1.0f - a_dn + k.sigma * xi) : c + s_up * (1.0f - a_up + k.sigma * xi);
    }
    return clip<Ln>(v, b_min, b_max) - ref;
  }
};

// PiecewiseStep (§4.10): step = s ((1 - t) v[q] + t v[q + 1]) at the node position of w.
template <>
struct Rule<kPiecewiseStep> {
  template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
  RPUJAX_RULE static F pulse(const Consts& k, F w, const F* p, M down, F xi) {
    using I = typename Ln::I;
    const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3];
    const I off = down ? Ln::splat_i(kMaxPiecewiseNodes) : Ln::splat_i(0);  // down nodes follow up nodes
    const F s = down ? s_down : s_up;
    const int m = k.n_nodes - 1;
    F step;
    if (m == 0) {
      step = Ln::gather(k.nodes, off) * s;
    } else {
      const M flat = !(b_max > b_min);
      const F range = flat ? Ln::splat(1.0f) : b_max - b_min;
      const F u = fm::cmax<Ln>((w - b_min) / range * static_cast<float>(m), Ln::splat(0.0f));
      F fl = Ln::rint(u);
      fl = fl > u ? fl - 1.0f : fl;  // floor(u), u >= 0
      const F qf = fm::cmin<Ln>(fl, Ln::splat(static_cast<float>(m - 1)));
      const F t = fm::cmin<Ln>(u - qf, Ln::splat(1.0f));
      const I q = Ln::to_i(qf) + off;
      const F interp = s * ((1.0f - t) * Ln::gather(k.nodes, q) + t * Ln::gather(k.nodes, q + 1));
      step = flat ? Ln::gather(k.nodes, off) * s : interp;
    }
    const F noise = 1.0f + k.sigma * xi;
    const F v = down ? w - step * noise : w + step * noise;
    return clip<Ln>(v, b_min, b_max);
  }
};

// ---- ConstantStep summed form (ffi/README.md §3) -------------------------------------------------
// n same-direction pulses as w -/+ (n s + s sigma sqrt(n) xi) where no pulse of the per-pulse process
// could have been clipped (`ok`); elsewhere the caller applies the n pulses one by one. Mirrors
// rpujax.devices.constant_step.summed.
//
// `sqrt_n_xi` is sqrt(n) * SUM_NORMAL (fm::sqrt_n_normal; 0 where sigma == 0).
template <class Ln, class F = typename Ln::F, class M = typename Ln::M>
RPUJAX_RULE F constant_step_summed(const Consts& k, F w, const F* p, M down, F nf, F sqrt_n_xi, M* ok) {
  const F b_max = p[0], b_min = p[1], s_up = p[2], s_down = p[3];
  const F s = down ? s_down : s_up;
  const F delta = nf * s + s * k.sigma * sqrt_n_xi;
  const F w_new = down ? w - delta : w + delta;
  const F reach = nf * Ln::abs(s) * k.guard_factor;
  *ok = (w - reach >= b_min) & (w + reach <= b_max);
  return w_new;
}

}  // namespace rules
}  // namespace rpujax
