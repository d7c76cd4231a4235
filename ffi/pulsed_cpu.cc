// XLA:CPU FFI handler `rpujax_pulsed_update`: the stochastic pulsed update (ffi/README.md).
//
//   rpujax_pulsed_update(weights, persistent, params, px, pd, bl, key, row_offset)
//       -> (weights, persistent)            both aliased input -> output
//   attributes: kind (int32), mode (int32), bl_max (int32), scalars (float64 array)
//
// Shapes (T tiles; when weights carry the tile axis, every other operand may omit it and is then
// shared by all tiles, read in place and never copied):
//   weights    f32[T, D, X] | f32[D, X]
//   persistent f32[0] (no persistent weights) | the shape of weights
//   params     f32[T, P, D, X] | f32[P, D, X]
//   px         f32[T, B, X] | f32[B, X]
//   pd         f32[T, B, D] | f32[B, D]
//   bl         s32[T, B] | s32[B]
//   key        u32[T, 2] | u32[2]
//   row_offset s32[T] | s32[]        global index of row 0 (weights are a row shard of a larger tile)
// The scalars are doubles because the JAX side holds them as Python floats (device_rules.h).
//
// Design (costs measured in shared/notes/cpu-pulsed-update-floor.md): nearly all of the time goes
// into the normal random numbers, so everything is arranged around computing them in vector lanes.
// - The x bit lines of all samples (BL bits per column, packed in ceil(bl_max / 32) uint32 words)
//   are drawn once per call before the row work; the d bit lines of a row are drawn by the task
//   that owns the row. n_ij = popcount(x_bits_j & d_bits_i) summed over the words.
// - Rows are independent within a sample, so a task takes a few rows at a time and runs each row
//   through all samples while it sits in L1. The numbers of a row do not depend on which thread
//   runs it: results are bit-identical for any thread count.
// - ConstantStep: the summed form (one normal per element-sample) where the guard holds; the
//   elements that fail the guard, and every element of the other kinds, take the per-pulse path:
//   the row's active elements are sorted by pulse count (counting sort) and run L at a time, so
//   the lanes of a group need nearly the same number of pulses.
// - SIMD by construction: the rules and the math of device_rules.h are templates over a lane
//   policy; here they are instantiated with GCC vector types of the build's native width
//   (`VecLanes`: 16 lanes with AVX-512, 8 with AVX2, 4 with SSE / NEON). Threefry stays the one
//   in rng.h: it is evaluated per lane in straight-line code that the SLP vectoriser turns into
//   vector operations.
// - Threads: XLA's intra-op pool (ffi::ThreadPool); the handler thread works too, and the handler
//   returns an ffi::Future that completes when the last task is done.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// Straight-line lane code should be vectorised at the full 512-bit width where AVX-512 exists (gcc
// defaults to 256-bit vectors on some Intel targets). No effect on other targets.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("prefer-vector-width=512")
#endif

#include "device_rules.h"
#include "pulsed_common.h"
#include "registry.h"
#include "rng.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rpujax {
namespace pulsed_cpu {
namespace {

using rules::Consts;

#define RPUJAX_NOINLINE __attribute__((noinline))
#define RPUJAX_INLINE inline __attribute__((always_inline))

// ---- the vector lane policy ----------------------------------------------------------------------
// L float32 lanes: one register of the widest vector ISA the build targets (16 with AVX-512, 8 with
// AVX, 4 otherwise). GCC vector types make every operator of the rules a vector operation; the few
// operations that are not operators use the ISA's intrinsics, or straight-line per-lane code that
// gcc's SLP vectoriser handles at the native width.
#if defined(__AVX512F__)
constexpr int L = 16;
#elif defined(__AVX__)
constexpr int L = 8;
#else
constexpr int L = 4;
#endif
typedef float vf __attribute__((vector_size(4 * L)));
typedef int32_t vi __attribute__((vector_size(4 * L)));
typedef uint32_t vu __attribute__((vector_size(4 * L)));

struct VecLanes {
  using F = vf;
  using I = vi;
  using M = vi;  // lanes of -1 (true) / 0 (false)

  RPUJAX_INLINE static F splat(float v) { return vf{} + v; }
  RPUJAX_INLINE static I splat_i(int32_t v) { return vi{} + v; }
  RPUJAX_INLINE static I as_int(F f) { return (vi)f; }
  RPUJAX_INLINE static F as_float(I i) { return (vf)i; }
  RPUJAX_INLINE static F to_f(I i) { return __builtin_convertvector(i, vf); }
  RPUJAX_INLINE static I to_i(F f) { return __builtin_convertvector(f, vi); }
  RPUJAX_INLINE static F sqrt(F x) {
#if defined(__AVX512F__)
    return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
    return (vf)_mm256_sqrt_ps((__m256)x);
#elif defined(__SSE2__)
    return (vf)_mm_sqrt_ps((__m128)x);
#else
    F r;
    for (int l = 0; l < L; ++l) r[l] = __builtin_sqrtf(x[l]);
    return r;
#endif
  }
  // fused where the scalar policy fuses (rules::ScalarLanes::fma), so that both agree
  RPUJAX_INLINE static F fma(F a, F b, F c) {
#if defined(__AVX512F__)
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && defined(__AVX__)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__FMA__) || defined(__aarch64__)
    F r;
    for (int l = 0; l < L; ++l) r[l] = __builtin_fmaf(a[l], b[l], c[l]);
    return r;
#else
    return a * b + c;
#endif
  }
  RPUJAX_INLINE static F rint(F x) {  // round half to even
#if defined(__AVX512F__)
    return (vf)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX__)
    return (vf)_mm256_round_ps((__m256)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__SSE4_1__)
    return (vf)_mm_round_ps((__m128)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    F r;
    for (int l = 0; l < L; ++l) r[l] = __builtin_rintf(x[l]);
    return r;
#endif
  }
  RPUJAX_INLINE static F abs(F x) { return (vf)((vi)x & 0x7fffffff); }
  RPUJAX_INLINE static F gather(const float* table, I i) {
#if defined(__AVX512F__)
    return (vf)_mm512_i32gather_ps((__m512i)i, table, 4);
#elif defined(__AVX2__)
    return (vf)_mm256_i32gather_ps(table, (__m256i)i, 4);
#else
    F r;
    for (int l = 0; l < L; ++l) r[l] = table[i[l]];
    return r;
#endif
  }
};

RPUJAX_INLINE vf loadf(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
RPUJAX_INLINE vi loadi(const int32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
RPUJAX_INLINE vu loadu(const uint32_t* p) {
  vu v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
RPUJAX_INLINE void storef(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
RPUJAX_INLINE void storei(int32_t* p, vi v) { std::memcpy(p, &v, sizeof(v)); }
RPUJAX_INLINE void storeu(uint32_t* p, vu v) { std::memcpy(p, &v, sizeof(v)); }

// Bit l set where lane l of m is true.
RPUJAX_INLINE uint32_t lane_bits(vi m) {
#if defined(__AVX512F__)
  return static_cast<uint32_t>(_mm512_test_epi32_mask((__m512i)m, (__m512i)m));
#elif defined(__AVX__)
  return static_cast<uint32_t>(_mm256_movemask_ps((__m256)m));
#elif defined(__SSE2__)
  return static_cast<uint32_t>(_mm_movemask_ps((__m128)m));
#else
  uint32_t r = 0;
  for (int l = 0; l < L; ++l) r |= static_cast<uint32_t>(m[l] != 0) << l;
  return r;
#endif
}

RPUJAX_INLINE bool any_lane(vi m) { return lane_bits(m != 0) != 0; }

RPUJAX_INLINE vu iota_u() {
  vu r;
  for (int l = 0; l < L; ++l) r[l] = static_cast<uint32_t>(l);
  return r;
}

// w[j[l]] = v[l] for the first nl lanes (the other lanes may repeat an index).
RPUJAX_INLINE void scatter_live(float* w, vi j, vf v, int nl) {
#if defined(__AVX512F__)
  _mm512_mask_i32scatter_ps(w, static_cast<__mmask16>((1u << nl) - 1u), (__m512i)j, (__m512)v, 4);
#else
  for (int l = 0; l < nl; ++l) w[j[l]] = v[l];
#endif
}

struct WordsV {
  vu y0, y1;
};

// rng::threefry2x32 on L counter pairs (straight-line per-lane code, vectorised by SLP).
RPUJAX_INLINE WordsV threefry_v(uint32_t s0, uint32_t s1, vu c0, vu c1) {
  WordsV r;
  for (int l = 0; l < L; ++l) {
    const rng::Words y = rng::threefry2x32(s0, s1, c0[l], c1[l]);
    r.y0[l] = y.y0;
    r.y1[l] = y.y1;
  }
  return r;
}

// Normals of stream (purpose, sub) for the element indices c1.
RPUJAX_INLINE vf normals_v(uint32_t s0, uint32_t s1, uint32_t purpose, uint32_t sub, vu c1) {
  const WordsV y = threefry_v(s0, s1, vu{} + rng::stream_c0(purpose, sub), c1);
  return rules::fm::normal<VecLanes>((vi)((y.y0 >> 8) + 1u), (vi)(y.y1 >> 8));
}

// uniform24 of the y0 words of L counter pairs.
RPUJAX_INLINE vf uniforms_v(uint32_t s0, uint32_t s1, vu c0, vu c1) {
  const WordsV y = threefry_v(s0, s1, c0, c1);
  return VecLanes::to_f((vi)(y.y0 >> 8)) * rng::kTwoNeg24;
}

// ---- call state ----------------------------------------------------------------------------------

// Everything a task needs; shared (read-only except the row counter and the outputs) by all tasks.
struct Call {
  int kind = 0, mode = 0, bl_max = 0, nw = 0;
  int64_t T = 1, B = 0, D = 0, X = 0, P = 0;
  float* w = nullptr;     // weights (the apparent weights with persistent weights)
  float* pers = nullptr;  // persistent weights, or nullptr
  const float* params = nullptr;
  const float* px = nullptr;
  const float* pd = nullptr;
  const int32_t* bl = nullptr;
  const uint32_t* key = nullptr;
  const int32_t* row_offset = nullptr;
  int64_t params_ts = 0, px_ts = 0, pd_ts = 0, bl_ts = 0, key_ts = 0, ro_ts = 0;  // per-tile strides (0: shared)
  Consts k;
  std::vector<uint32_t> skeys;  // [Tk][B][2] sample keys
  int64_t skeys_ts = 0;
  std::vector<uint32_t> xbits;  // [Tx][B][nw][X]
  int64_t xbits_ts = 0;
  int64_t rows_per_block = 1;
  std::atomic<int64_t> next_block{0};
};

// Per-task scratch.
struct Scratch {
  std::vector<int32_t> cnt;     // signed counts of the current block and sample (+n down, -n up), padded
  std::vector<int32_t> cand;    // active / guarded-out elements of the block
  std::vector<int32_t> list;    // the same, sorted by pulse count, descending
  std::vector<int32_t> hist;    // counting sort bins
  std::vector<uint32_t> dbits;  // [B][R][nw] d bit lines of the current block

  explicit Scratch(const Call& c)
      : cnt(static_cast<size_t>(c.rows_per_block * c.X + L), 0),
        cand(static_cast<size_t>(c.rows_per_block * c.X + L)),
        list(static_cast<size_t>(c.rows_per_block * c.X + L)),
        hist(static_cast<size_t>(c.bl_max) + 2),
        dbits(static_cast<size_t>(c.B * c.rows_per_block * std::max(c.nw, 1))) {}
};

// ---- bit lines -----------------------------------------------------------------------------------

// x bit lines of one sample with train length bl: out[w * X + j]; bit k of word w is position
// 32 w + k: uniform24(XBIT(k, j)) < |px_j|. Lanes run over columns.
RPUJAX_NOINLINE void make_xbits(const float* px, int64_t X, int bl, int nw, uint32_t s0, uint32_t s1,
                                uint32_t* out) {
  for (int64_t j0 = 0; j0 < X; j0 += L) {
    const int nl = static_cast<int>(std::min<int64_t>(L, X - j0));
    float pt[L] = {0};
    for (int l = 0; l < nl; ++l) pt[l] = px[j0 + l];
    const vf p = VecLanes::abs(loadf(pt));
    const vu col = iota_u() + static_cast<uint32_t>(j0);
    for (int wd = 0; wd < nw; ++wd) {
      vu word = vu{};
      const int k_end = std::min(bl, 32 * wd + 32);
      for (int kk = 32 * wd; kk < k_end; ++kk) {
        const vf u = uniforms_v(s0, s1, vu{} + rng::stream_c0(rng::kXBit, static_cast<uint32_t>(kk)), col);
        word |= (vu)(u < p) & (1u << (kk - 32 * wd));
      }
      uint32_t wt[L];
      storeu(wt, word);
      for (int l = 0; l < nl; ++l) out[wd * X + j0 + l] = wt[l];
    }
  }
}

// d bit line of row i of one sample (nw words). Lanes run over pulse positions.
RPUJAX_INLINE void make_dbits(float pd_abs, int64_t i, int bl, int nw, uint32_t s0, uint32_t s1, uint32_t* out) {
  for (int wd = 0; wd < nw; ++wd) out[wd] = 0;
  const vu row = vu{} + static_cast<uint32_t>(i);
  for (int k0 = 0; k0 < bl; k0 += L) {
    const vu pos = iota_u() + static_cast<uint32_t>(k0);
    const vf u = uniforms_v(s0, s1, pos | (rng::kDBit << rng::kPurposeShift), row);
    const uint32_t bits = lane_bits((u < pd_abs) & ((vi)pos < bl));
    out[k0 >> 5] |= bits << (k0 & 31);
  }
}

// ---- counts --------------------------------------------------------------------------------------
// Signed counts of row i, sample b into cnt[0..X) (+n: n down pulses, -n: n up pulses); cnt[X..X+L)
// stays 0. Down where sign(px_j) == sign(pd_i). Return whether any count is non-zero.

RPUJAX_INLINE vu popcount_v(vu v) {
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512F__)
  return (vu)_mm512_popcnt_epi32((__m512i)v);
#else
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  v = (v + (v >> 4)) & 0x0f0f0f0fu;
  return (v * 0x01010101u) >> 24;
#endif
}

RPUJAX_NOINLINE bool counts_stochastic(const uint32_t* xb, const uint32_t* db, int nw, int64_t X, const float* px,
                                       float pd_i, int32_t* cnt) {
  uint32_t any_d = 0;
  for (int wd = 0; wd < nw; ++wd) any_d |= db[wd];
  if (any_d == 0) return false;
  const bool neg_d = pd_i < 0.0f;
  const vi negd = vi{} - static_cast<int32_t>(neg_d);
  vu any = vu{};
  int64_t j0 = 0;
  for (; j0 + L <= X; j0 += L) {
    vu n = popcount_v(loadu(xb + j0) & db[0]);
    for (int wd = 1; wd < nw; ++wd) n += popcount_v(loadu(xb + wd * X + j0) & db[wd]);
    const vi neg = loadf(px + j0) < 0.0f;
    storei(cnt + j0, neg != negd ? -(vi)n : (vi)n);
    any |= n;
  }
  uint32_t any_s = 0;
  for (int l = 0; l < L; ++l) any_s |= any[l];
  for (int64_t j = j0; j < X; ++j) {
    int32_t n = 0;
    for (int wd = 0; wd < nw; ++wd) n += __builtin_popcount(xb[wd * X + j] & db[wd]);
    cnt[j] = ((px[j] < 0.0f) != neg_d) ? -n : n;
    any_s |= static_cast<uint32_t>(n);
  }
  return any_s != 0;
}

// MEAN_COUNT: c = rint((cd_i / BL) cx_j)  (jax_backend._counts, mode 1).
RPUJAX_NOINLINE bool counts_mean(const float* px, float pd_i, int bl, int64_t X, int32_t* cnt) {
  if (pd_i == 0.0f) return false;
  const float r = pd_i / static_cast<float>(bl);
  int32_t any = 0;
  for (int64_t j = 0; j < X; ++j) {
    const int32_t c = static_cast<int32_t>(__builtin_rintf(r * px[j]));
    cnt[j] = c;
    any |= c;
  }
  return any != 0;
}

// DETERMINISTIC_IMPLICIT: n = rint((BL |pd_i|) |px_j|)  (jax_backend._counts, mode 2).
RPUJAX_NOINLINE bool counts_implicit(const float* px, float pd_i, int bl, int64_t X, int32_t* cnt) {
  if (pd_i == 0.0f) return false;
  const float a = static_cast<float>(bl) * __builtin_fabsf(pd_i);
  const bool neg_d = pd_i < 0.0f;
  int32_t any = 0;
  for (int64_t j = 0; j < X; ++j) {
    const float v = px[j];
    const int32_t n = static_cast<int32_t>(__builtin_rintf(a * __builtin_fabsf(v)));
    cnt[j] = ((v < 0.0f) != neg_d) ? -n : n;
    any |= n;
  }
  return any != 0;
}

// ---- per-pulse path ------------------------------------------------------------------------------

// Sorts cand[0..m) by |cnt| descending into list (counting sort; counts above `cap` share the top
// bin, which only affects the grouping, never the results).
void sort_by_count(const int32_t* cnt, const int32_t* cand, int64_t m, int cap, int32_t* hist, int32_t* list) {
  std::fill(hist, hist + cap + 2, 0);
  for (int64_t e = 0; e < m; ++e) {
    const int32_t c = cnt[cand[e]];
    ++hist[cap - std::min<int32_t>(c < 0 ? -c : c, cap)];
  }
  int32_t pos = 0;
  for (int v = 0; v <= cap; ++v) {
    const int32_t h = hist[v];
    hist[v] = pos;
    pos += h;
  }
  for (int64_t e = 0; e < m; ++e) {
    const int32_t c = cnt[cand[e]];
    list[hist[cap - std::min<int32_t>(c < 0 ? -c : c, cap)]++] = cand[e];
  }
}

// Applies the |cnt[j]| pulses of every element j of list[0..m) one by one (pulse t with normal
// PULSE_NORMAL(t)), L elements at a time.
template <int KIND, bool NORMAL>
RPUJAX_NOINLINE void pulse_groups(const Consts& k, float* w, const float* const* prm, const int32_t* cnt,
                                  const int32_t* list, int64_t m, uint32_t s0, uint32_t s1, uint32_t c1_base) {
  constexpr int P = rules::num_params(KIND);
  for (int64_t g = 0; g < m; g += L) {
    const int nl = static_cast<int>(std::min<int64_t>(L, m - g));
    // list has L entries of slack past m (copies of a valid index); those lanes get n = 0
    const vi j = loadi(list + g);
    const vi live = (vi)iota_u() < nl;
    const vi c = VecLanes::as_int(VecLanes::gather(reinterpret_cast<const float*>(cnt), j));
    const vi n = live ? (c < 0 ? -c : c) : vi{};
    const vi down = c > 0;
    const vu c1 = (vu)j + c1_base;
    vf p[P];
    for (int q = 0; q < P; ++q) p[q] = VecLanes::gather(prm[q], j);
    vf wv = VecLanes::gather(w, j);
    int32_t tmax = 0;
    for (int l = 0; l < L; ++l) tmax = std::max(tmax, n[l]);
    for (int32_t t = 0; t < tmax; ++t) {
      const vf xi = NORMAL ? normals_v(s0, s1, rng::kPulseNormal, static_cast<uint32_t>(t), c1) : vf{};
      const vf v = rules::Rule<KIND>::template pulse<VecLanes>(k, wv, p, down, xi);
      wv = t < n ? v : wv;
    }
    scatter_live(w, j, wv, nl);
  }
}

template <int KIND>
RPUJAX_INLINE void run_pulses(const Consts& k, float* w, const float* const* prm, const int32_t* cnt, Scratch& s,
                              int64_t m, int cap, uint32_t s0, uint32_t s1, uint32_t c1_base) {
  if (m == 0) return;
  int32_t* list = s.cand.data();
  if (m > L) {
    sort_by_count(cnt, s.cand.data(), m, cap, s.hist.data(), s.list.data());
    list = s.list.data();
  }
  for (int l = 0; l < L; ++l) list[m + l] = list[m - 1];  // the lanes past m of the last group
  if (k.needs_normal) {
    pulse_groups<KIND, true>(k, w, prm, cnt, list, m, s0, s1, c1_base);
  } else {
    pulse_groups<KIND, false>(k, w, prm, cnt, list, m, s0, s1, c1_base);
  }
}

// ---- ConstantStep summed form --------------------------------------------------------------------

// The chunk of L elements at column j0 (pointers already offset to j0). Returns the lanes whose
// guard fails (they keep their weight and go through the per-pulse path).
template <bool NORMAL>
RPUJAX_INLINE uint32_t summed_chunk(const Consts& k, float* w, const float* const* prm, const int32_t* cnt,
                                    int64_t j0, uint32_t s0, uint32_t s1, uint32_t c1_base) {
  const vi c = loadi(cnt);
  const vi n = c < 0 ? -c : c;
  const vi down = c > 0;
  const vf nf = VecLanes::to_f(n);
  vf sqrt_n_xi = vf{};
  if (NORMAL) {
    const WordsV y = threefry_v(s0, s1, vu{} + rng::stream_c0(rng::kSumNormal, 0u),
                                 iota_u() + (c1_base + static_cast<uint32_t>(j0)));
    sqrt_n_xi = rules::fm::sqrt_n_normal<VecLanes>(nf, (vi)((y.y0 >> 8) + 1u), (vi)(y.y1 >> 8));
  }
  const vf p[4] = {loadf(prm[0]), loadf(prm[1]), loadf(prm[2]), loadf(prm[3])};
  const vf wv = loadf(w);
  vi ok;
  const vf ws = rules::constant_step_summed<VecLanes>(k, wv, p, down, nf, sqrt_n_xi, &ok);
  const vi active = n > 0;
  storef(w, (active & ok) != 0 ? ws : wv);
  return lane_bits(active & ~ok);
}

// The summed form over a row; the columns that fail the guard are written to cand. Returns their
// number.
template <bool NORMAL>
RPUJAX_NOINLINE int64_t summed_row(const Consts& k, float* w, const float* const* prm, const int32_t* cnt,
                                   int64_t X, uint32_t s0, uint32_t s1, uint32_t c1_base, int32_t* cand) {
  int64_t m = 0;
  auto append = [&](uint32_t bits, int64_t j0) {
    while (bits) {
      cand[m++] = static_cast<int32_t>(j0 + __builtin_ctz(bits));
      bits &= bits - 1;
    }
  };
  int64_t j0 = 0;
  for (; j0 + L <= X; j0 += L) {
    if (!any_lane(loadi(cnt + j0))) continue;
    const float* p[4] = {prm[0] + j0, prm[1] + j0, prm[2] + j0, prm[3] + j0};
    append(summed_chunk<NORMAL>(k, w + j0, p, cnt + j0, j0, s0, s1, c1_base), j0);
  }
  if (j0 < X) {  // the tail through a padded copy (cnt is zero past X)
    const int nl = static_cast<int>(X - j0);
    float wt[L] = {0}, pt[4][L] = {{0}};
    for (int l = 0; l < nl; ++l) {
      wt[l] = w[j0 + l];
      for (int q = 0; q < 4; ++q) pt[q][l] = prm[q][j0 + l];
    }
    const float* p[4] = {pt[0], pt[1], pt[2], pt[3]};
    append(summed_chunk<NORMAL>(k, wt, p, cnt + j0, j0, s0, s1, c1_base), j0);
    for (int l = 0; l < nl; ++l) w[j0 + l] = wt[l];
  }
  return m;
}

// ---- write noise ---------------------------------------------------------------------------------

RPUJAX_INLINE void write_noise_chunk(float wn, float* app, const float* pers, const int32_t* cnt, int64_t j0,
                                     uint32_t s0, uint32_t s1, uint32_t c1_base) {
  const vf xi = normals_v(s0, s1, rng::kWriteNoise, 0u, iota_u() + (c1_base + static_cast<uint32_t>(j0)));
  const vf a = loadf(app);
  storef(app, loadi(cnt) != 0 ? loadf(pers) + wn * xi : a);
}

// apparent = persistent + write_noise * WRITE_NOISE for every element with a pulse in this sample.
RPUJAX_NOINLINE void write_noise_row(float wn, float* app, const float* pers, const int32_t* cnt, int64_t X,
                                     uint32_t s0, uint32_t s1, uint32_t c1_base) {
  int64_t j0 = 0;
  for (; j0 + L <= X; j0 += L) {
    if (!any_lane(loadi(cnt + j0))) continue;
    write_noise_chunk(wn, app + j0, pers + j0, cnt + j0, j0, s0, s1, c1_base);
  }
  if (j0 < X) {
    const int nl = static_cast<int>(X - j0);
    float at[L] = {0}, pt[L] = {0};
    for (int l = 0; l < nl; ++l) {
      at[l] = app[j0 + l];
      pt[l] = pers[j0 + l];
    }
    write_noise_chunk(wn, at, pt, cnt + j0, j0, s0, s1, c1_base);
    for (int l = 0; l < nl; ++l) app[j0 + l] = at[l];
  }
}

// ---- a block of rows through all samples ----------------------------------------------------------
// R consecutive rows of one tile are contiguous in memory (row-major), so after the per-row counts
// the block is one segment of R X elements for everything elementwise: the summed form, the
// per-pulse groups and the write noise. Processing rows in blocks fills the per-pulse groups with
// the few guarded-out elements of several rows at once (ConstantStep sends ~0.3-5 % of elements
// there; one row alone would leave most of the L lanes of its group empty).

template <int KIND>
void run_block(const Call& c, Scratch& s, int64_t t, int64_t i0, int64_t R) {
  constexpr int P = rules::num_params(KIND);
  const int64_t X = c.X, D = c.D, n = R * X;
  const bool wn = c.pers != nullptr;
  float* app = c.w + (t * D + i0) * X;
  float* w = wn ? c.pers + (t * D + i0) * X : app;  // the pulses act on the persistent weights
  const float* prm[rules::kMaxParams];
  for (int q = 0; q < P; ++q) prm[q] = c.params + t * c.params_ts + (static_cast<int64_t>(q) * D + i0) * X;
  const float* pd_t = c.pd + t * c.pd_ts;
  const float* px_t = c.px + t * c.px_ts;
  const int32_t* bl_t = c.bl + t * c.bl_ts;
  const uint32_t* keys = c.skeys.data() + t * c.skeys_ts;
  const uint32_t* xbits = c.xbits.data() + t * c.xbits_ts;
  // Draws are indexed by the global row g = row_offset + i, so a row shard draws exactly what the
  // whole tile draws for those rows: d bit lines by g, element counters g X + j (mod 2^32, as JAX).
  const int64_t g0 = c.row_offset[t * c.ro_ts] + i0;
  const uint32_t c1_base = static_cast<uint32_t>(g0 * X);
  int32_t* cnt = s.cnt.data();
  std::fill(cnt + n, cnt + n + L, 0);  // the padding read by the last (partial) vector chunk

  if (c.mode == 0) {  // the d bit lines of the block's rows, every sample: dbits[(b R + r) nw + w]
    for (int64_t b = 0; b < c.B; ++b) {
      const int bl = bl_t[b];
      if (bl <= 0) continue;
      for (int64_t r = 0; r < R; ++r)
        make_dbits(__builtin_fabsf(pd_t[b * D + i0 + r]), g0 + r, bl, c.nw, keys[2 * b], keys[2 * b + 1],
                   s.dbits.data() + (b * R + r) * c.nw);
    }
  }

  for (int64_t b = 0; b < c.B; ++b) {
    const int bl = bl_t[b];
    if (bl <= 0) continue;
    const float* px_b = px_t + b * X;
    bool any = false;
    for (int64_t r = 0; r < R; ++r) {
      const float pd_i = pd_t[b * D + i0 + r];
      int32_t* cr = cnt + r * X;
      bool a;
      if (c.mode == 0) {
        a = counts_stochastic(xbits + b * c.nw * X, s.dbits.data() + (b * R + r) * c.nw, c.nw, X, px_b, pd_i, cr);
      } else if (c.mode == 1) {
        a = counts_mean(px_b, pd_i, bl, X, cr);
      } else {
        a = counts_implicit(px_b, pd_i, bl, X, cr);
      }
      if (!a) std::fill(cr, cr + X, 0);  // a row without pulses may have been skipped early
      any |= a;
    }
    if (!any) continue;
    const uint32_t s0 = keys[2 * b], s1 = keys[2 * b + 1];

    int64_t m = 0;
    if (KIND == rules::kConstantStep) {
      m = c.k.needs_normal ? summed_row<true>(c.k, w, prm, cnt, n, s0, s1, c1_base, s.cand.data())
                           : summed_row<false>(c.k, w, prm, cnt, n, s0, s1, c1_base, s.cand.data());
    } else {
      int32_t* cand = s.cand.data();
      for (int64_t e = 0; e < n; ++e) {
        cand[m] = static_cast<int32_t>(e);
        m += cnt[e] != 0;
      }
    }
    run_pulses<KIND>(c.k, w, prm, cnt, s, m, c.bl_max, s0, s1, c1_base);
    if (wn) write_noise_row(c.k.write_noise, app, w, cnt, n, s0, s1, c1_base);
  }
}

using BlockFn = void (*)(const Call&, Scratch&, int64_t, int64_t, int64_t);

BlockFn block_fn(int kind) {
  switch (kind) {
    case 0: return &run_block<0>;
    case 1: return &run_block<1>;
    case 2: return &run_block<2>;
    case 3: return &run_block<3>;
    case 4: return &run_block<4>;
    case 5: return &run_block<5>;
    case 6: return &run_block<6>;
    default: return nullptr;
  }
}

// Blocks are taken one at a time from a shared counter (load balance); the result of a block does
// not depend on which task runs it.
void work(const std::shared_ptr<Call>& c) {
  Scratch s(*c);
  const BlockFn fn = block_fn(c->kind);
  const int64_t per_tile = (c->D + c->rows_per_block - 1) / c->rows_per_block;
  const int64_t blocks = c->T * per_tile;
  for (;;) {
    const int64_t q = c->next_block.fetch_add(1, std::memory_order_relaxed);
    if (q >= blocks) break;
    const int64_t t = q / per_tile;
    const int64_t i0 = (q % per_tile) * c->rows_per_block;
    fn(*c, s, t, i0, std::min(c->rows_per_block, c->D - i0));
  }
}

// ---- handler -----------------------------------------------------------------------------------

ffi::Future ready(std::optional<ffi::Error> err = std::nullopt) {
  ffi::Promise p;
  ffi::Future f(p);
  if (err) {
    p.SetError(*err);
  } else {
    p.SetAvailable();
  }
  return f;
}

ffi::Future PulsedUpdateImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w_in, ffi::Buffer<ffi::F32> pers_in,
                             ffi::Buffer<ffi::F32> params, ffi::Buffer<ffi::F32> px, ffi::Buffer<ffi::F32> pd,
                             ffi::Buffer<ffi::S32> bl, ffi::Buffer<ffi::U32> key, ffi::Buffer<ffi::S32> row_offset,
                             ffi::ResultBuffer<ffi::F32> w_out, ffi::ResultBuffer<ffi::F32> pers_out, int32_t kind,
                             int32_t mode, int32_t bl_max, ffi::Span<const double> scalars) {
  pulsed::Layout lay;
  if (auto e =
          pulsed::make_layout(w_in, pers_in, params, px, pd, bl, key, row_offset, kind, mode, bl_max, scalars, &lay))
    return ready(e);
  auto c = std::make_shared<Call>();
  c->kind = lay.kind;
  c->mode = lay.mode;
  c->bl_max = lay.bl_max;
  c->nw = lay.nw;
  c->T = lay.T;
  c->B = lay.B;
  c->D = lay.D;
  c->X = lay.X;
  c->P = lay.P;
  c->params_ts = lay.params_ts;
  c->px_ts = lay.px_ts;
  c->pd_ts = lay.pd_ts;
  c->bl_ts = lay.bl_ts;
  c->key_ts = lay.key_ts;
  c->ro_ts = lay.ro_ts;
  c->k = lay.k;
  const bool has_pers = lay.has_pers;

  // Aliasing makes the outputs the input buffers; copy if XLA ever hands over distinct ones.
  const size_t wbytes = static_cast<size_t>(w_in.element_count()) * sizeof(float);
  if (w_out->typed_data() != w_in.typed_data()) std::memcpy(w_out->typed_data(), w_in.typed_data(), wbytes);
  if (has_pers && pers_out->typed_data() != pers_in.typed_data())
    std::memcpy(pers_out->typed_data(), pers_in.typed_data(), wbytes);
  c->w = w_out->typed_data();
  c->pers = has_pers ? pers_out->typed_data() : nullptr;
  c->params = params.typed_data();
  c->px = px.typed_data();
  c->pd = pd.typed_data();
  c->bl = bl.typed_data();
  c->key = key.typed_data();
  c->row_offset = row_offset.typed_data();
  if (c->T * c->D * c->X == 0 || c->B == 0) return ready();
  // The global rows must fit in a tile of fewer than 2^32 elements (make_layout's rule for a whole
  // tile), else element counters would repeat. ro X < 2^63 cannot overflow (ro < 2^31, X < 2^32).
  for (int64_t t = 0; t < (c->ro_ts ? c->T : 1); ++t) {
    const int64_t ro = c->row_offset[t];
    if (ro < 0 || ro * c->X >= (int64_t{1} << 32) - c->D * c->X)
      return ready(pulsed::invalid("row_offset[" + std::to_string(t) + "] = " + std::to_string(ro) +
                                   ": expected 0 <= row_offset and (row_offset + D) X < 2^32 with D = " +
                                   std::to_string(c->D) + ", X = " + std::to_string(c->X)));
  }
  for (int64_t q = 0; q < (c->bl_ts ? c->T : 1) * c->B; ++q) {
    if (c->bl[q] > bl_max)
      return ready(pulsed::invalid("bl[" + std::to_string(q) + "] = " + std::to_string(c->bl[q]) +
                                   " exceeds bl_max = " + std::to_string(bl_max)));
  }

  // Sample keys (per key tile) and x bit lines (per (key, px, bl) tile), on this thread: a few
  // percent of the work.
  const int64_t Tk = c->key_ts ? c->T : 1;
  c->skeys.resize(static_cast<size_t>(Tk * c->B * 2));
  c->skeys_ts = c->key_ts ? 2 * c->B : 0;
  for (int64_t t = 0; t < Tk; ++t) {
    for (int64_t b = 0; b < c->B; ++b) {
      const rng::Words y = rng::sample_key(c->key[t * 2], c->key[t * 2 + 1], static_cast<uint32_t>(b));
      c->skeys[(t * c->B + b) * 2] = y.y0;
      c->skeys[(t * c->B + b) * 2 + 1] = y.y1;
    }
  }
  if (mode == 0 && c->nw > 0) {
    const bool per_tile = c->key_ts || c->px_ts || c->bl_ts;
    const int64_t Tx = per_tile ? c->T : 1;
    c->xbits_ts = per_tile ? c->B * c->nw * c->X : 0;
    c->xbits.assign(static_cast<size_t>(Tx * c->B * c->nw * c->X), 0u);
    for (int64_t t = 0; t < Tx; ++t) {
      for (int64_t b = 0; b < c->B; ++b) {
        const int blb = c->bl[t * c->bl_ts + b];
        if (blb <= 0) continue;
        const uint32_t* sk = c->skeys.data() + t * c->skeys_ts + 2 * b;
        make_xbits(c->px + t * c->px_ts + b * c->X, c->X, blb, c->nw, sk[0], sk[1],
                   c->xbits.data() + t * c->xbits_ts + b * c->nw * c->X);
      }
    }
  }

  // Blocks of ~4096 elements (a few rows), at least 4 blocks per task for the load balance.
  const int64_t nthreads = std::max<int64_t>(1, pool.num_threads());
  c->rows_per_block = std::max<int64_t>(1, std::min<int64_t>(4096 / std::max<int64_t>(c->X, 1), c->D));
  while (c->rows_per_block > 1 && c->T * ((c->D + c->rows_per_block - 1) / c->rows_per_block) < 4 * nthreads)
    c->rows_per_block /= 2;
  const int64_t blocks = c->T * ((c->D + c->rows_per_block - 1) / c->rows_per_block);
  const int64_t ntasks = std::min<int64_t>(nthreads, blocks);
  if (ntasks <= 1) {
    work(c);
    return ready();
  }
  ffi::CountDownPromise done(ntasks);
  ffi::Future fut(done);
  for (int64_t q = 1; q < ntasks; ++q) {
    pool.Schedule([c, done]() mutable {
      work(c);
      done.CountDown();
    });
  }
  work(c);
  done.CountDown();
  return fut;
}

}  // namespace
}  // namespace pulsed_cpu
}  // namespace rpujax

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxPulsedUpdateCpu, rpujax::pulsed_cpu::PulsedUpdateImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  RPUJAX_PULSED_UPDATE_SIGNATURE);

RPUJAX_FFI_REGISTER("rpujax_pulsed_update", RpujaxPulsedUpdateCpu);
