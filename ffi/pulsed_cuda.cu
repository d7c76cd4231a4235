// XLA:CUDA FFI handler `rpujax_pulsed_update` (platform "CUDA"): the stochastic pulsed update.
//
// Same call, shapes, attributes and results as the CPU handler (pulsed_cpu.cc, ffi/README.md §4),
// same random streams (rng.h) and the same device rules (device_rules.h, scalar lane policy), so for
// the same key the CPU and CUDA kernels agree to float rounding (they differ only where nvcc and gcc
// fuse different multiply-adds). One difference: the kernels read `row_offset` from device memory
// (no host round trip per call), so this handler does not check its range as the CPU handler does.
//
// Kernels, all on the call's stream:
//   1. sample keys: threefry(k0, k1; 0, b) per (key tile, sample);
//   2. bit lines (mode 0): one thread per (tile, sample, index, 32-bit word) of the x and d lines,
//      bit k = uniform24(XBIT/DBIT(k, index)) < |p|;
//   3. update: one thread per cross-point (tile, i, j). It keeps its weight in a register and runs
//      through the samples in order: n = sum of __popc(x_word & d_word) (mode 0) or the
//      deterministic count (modes 1, 2), then the ConstantStep summed form under its guard, or the
//      n pulses one by one with PULSE_NORMAL(t), then the write-noise redraw.
// Scratch memory (keys, bit lines) comes from XLA's scratch allocator.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "device_rules.h"
#include "pulsed_common.h"
#include "registry.h"
#include "rng.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace rpujax {
namespace pulsed_cuda {
namespace {

using rules::Consts;
using rules::ScalarLanes;

// Device-side view of one call (passed by value to the kernels).
struct Args {
  int mode, bl_max, nw;
  int64_t T, B, D, X;
  float* w;     // weights (apparent weights with persistent weights)
  float* pers;  // persistent weights or nullptr
  const float* params;
  const float* px;
  const float* pd;
  const int32_t* bl;
  const uint32_t* key;
  const int32_t* row_offset;  // global index of row 0 per tile, read on the device
  int64_t params_ts, px_ts, pd_ts, bl_ts, key_ts, ro_ts;
  uint32_t* skeys;  // [Tk][B][2]
  int64_t skeys_ts;
  uint32_t* xbits;  // [Tx][B][nw][X]
  int64_t xbits_ts;
  uint32_t* dbits;  // [Td][B][nw][D]
  int64_t dbits_ts;
};

__device__ __forceinline__ int clamp_bl(int bl, int bl_max) { return bl < 0 ? 0 : (bl > bl_max ? bl_max : bl); }

__global__ void sample_keys_kernel(Args a, int64_t tk) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= tk * a.B) return;
  const int64_t t = e / a.B, b = e % a.B;
  const rng::Words y = rng::sample_key(a.key[t * a.key_ts], a.key[t * a.key_ts + 1], static_cast<uint32_t>(b));
  a.skeys[e * 2] = y.y0;
  a.skeys[e * 2 + 1] = y.y1;
}

// One word of one bit line: bits k in [32 wd, min(bl, 32 wd + 32)) of index `idx`.
__device__ __forceinline__ uint32_t bit_word(uint32_t s0, uint32_t s1, uint32_t purpose, uint32_t idx, float p_abs,
                                             int bl, int wd) {
  uint32_t word = 0;
  const int k_end = min(bl, 32 * wd + 32);
  for (int k = 32 * wd; k < k_end; ++k) {
    const float u = rng::uniform24(rng::threefry2x32(s0, s1, rng::stream_c0(purpose, static_cast<uint32_t>(k)), idx).y0);
    word |= static_cast<uint32_t>(u < p_abs) << (k - 32 * wd);
  }
  return word;
}

// x lines of tiles [0, tx) and d lines of tiles [0, td): thread e covers one (tile, b, word, index).
__global__ void bits_kernel(Args a, int64_t tx, int64_t td) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t nx = tx * a.B * a.nw * a.X;
  const int64_t nd = td * a.B * a.nw * a.D;
  if (e < nx) {
    const int64_t j = e % a.X;
    const int64_t r = e / a.X;
    const int wd = static_cast<int>(r % a.nw);
    const int64_t tb = r / a.nw;
    const int64_t b = tb % a.B, t = tb / a.B;
    const int bl = clamp_bl(a.bl[t * a.bl_ts + b], a.bl_max);
    const uint32_t* sk = a.skeys + t * a.skeys_ts + 2 * b;
    const float p = fabsf(a.px[t * a.px_ts + b * a.X + j]);
    a.xbits[e] = bit_word(sk[0], sk[1], rng::kXBit, static_cast<uint32_t>(j), p, bl, wd);
  } else if (e < nx + nd) {
    const int64_t f = e - nx;
    const int64_t i = f % a.D;
    const int64_t r = f / a.D;
    const int wd = static_cast<int>(r % a.nw);
    const int64_t tb = r / a.nw;
    const int64_t b = tb % a.B, t = tb / a.B;
    const int bl = clamp_bl(a.bl[t * a.bl_ts + b], a.bl_max);
    const uint32_t* sk = a.skeys + t * a.skeys_ts + 2 * b;
    const float p = fabsf(a.pd[t * a.pd_ts + b * a.D + i]);
    const int64_t g = a.row_offset[t * a.ro_ts] + i;  // draws are indexed by the global row
    a.dbits[f] = bit_word(sk[0], sk[1], rng::kDBit, static_cast<uint32_t>(g), p, bl, wd);
  }
}

__device__ __forceinline__ float normal_at(uint32_t s0, uint32_t s1, uint32_t purpose, uint32_t sub, uint32_t c1) {
  return rules::normal_of(rng::threefry2x32(s0, s1, rng::stream_c0(purpose, sub), c1));
}

template <int KIND>
__global__ void update_kernel(Args a, Consts k) {
  constexpr int P = rules::num_params(KIND);
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= a.T * a.D * a.X) return;
  const int64_t j = e % a.X;
  const int64_t ti = e / a.X;
  const int64_t i = ti % a.D, t = ti / a.D;
  // element counter of the global row (a row shard draws what the whole tile draws there)
  const uint32_t c1 = static_cast<uint32_t>((a.row_offset[t * a.ro_ts] + i) * a.X + j);

  float p[P];
  for (int q = 0; q < P; ++q) p[q] = a.params[t * a.params_ts + (q * a.D + i) * a.X + j];
  const bool wn = a.pers != nullptr;
  float app = a.w[e];
  float w = wn ? a.pers[e] : app;  // the pulses act on the persistent weights

  const uint32_t* keys = a.skeys + t * a.skeys_ts;
  const uint32_t* xb = a.xbits + t * a.xbits_ts;
  const uint32_t* db = a.dbits + t * a.dbits_ts;
  for (int64_t b = 0; b < a.B; ++b) {
    const int bl = clamp_bl(a.bl[t * a.bl_ts + b], a.bl_max);
    if (bl == 0) continue;
    const float pxj = a.px[t * a.px_ts + b * a.X + j];
    const float pdi = a.pd[t * a.pd_ts + b * a.D + i];
    int32_t n;
    bool down;
    if (a.mode == 0) {
      n = 0;
      for (int wd = 0; wd < a.nw; ++wd)
        n += __popc(xb[(b * a.nw + wd) * a.X + j] & db[(b * a.nw + wd) * a.D + i]);
      down = (pxj < 0.0f) == (pdi < 0.0f);
    } else if (a.mode == 1) {  // rint((cd_i / BL) cx_j)
      const float c = rintf(__fdiv_rn(pdi, static_cast<float>(bl)) * pxj);
      n = static_cast<int32_t>(fabsf(c));
      down = c > 0.0f;
    } else {  // rint((BL |pd_i|) |px_j|), direction sign(px_j) sign(pd_i)
      n = static_cast<int32_t>(rintf(__fmul_rn(static_cast<float>(bl), fabsf(pdi)) * fabsf(pxj)));
      down = (pxj < 0.0f) == (pdi < 0.0f);
    }
    if (n <= 0) continue;
    const uint32_t s0 = keys[2 * b], s1 = keys[2 * b + 1];
    bool per_pulse = true;
    if (KIND == rules::kConstantStep) {
      const float nf = static_cast<float>(n);
      float sqrt_n_xi = 0.0f;
      if (k.needs_normal) {
        const rng::Words y = rng::threefry2x32(s0, s1, rng::stream_c0(rng::kSumNormal, 0u), c1);
        sqrt_n_xi = rules::fm::sqrt_n_normal<ScalarLanes>(nf, static_cast<int32_t>((y.y0 >> 8) + 1u),
                                                           static_cast<int32_t>(y.y1 >> 8));
      }
      bool ok;
      const float ws = rules::constant_step_summed<ScalarLanes>(k, w, p, down, nf, sqrt_n_xi, &ok);
      if (ok) {
        w = ws;
        per_pulse = false;
      }
    }
    if (per_pulse) {
      for (int32_t tp = 0; tp < n; ++tp) {
        const float xi = k.needs_normal ? normal_at(s0, s1, rng::kPulseNormal, static_cast<uint32_t>(tp), c1) : 0.0f;
        w = rules::Rule<KIND>::template pulse<ScalarLanes>(k, w, p, down, xi);
      }
    }
    if (wn) app = w + k.write_noise * normal_at(s0, s1, rng::kWriteNoise, 0u, c1);
  }
  if (wn) {
    a.pers[e] = w;
    a.w[e] = app;
  } else {
    a.w[e] = w;
  }
}

template <int KIND>
void launch_update(const Args& a, const Consts& k, cudaStream_t stream) {
  const int64_t n = a.T * a.D * a.X;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  update_kernel<KIND><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a, k);
}

ffi::Error cuda_error(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("rpujax_pulsed_update (CUDA): ") + what + ": " + cudaGetErrorString(err));
}

ffi::Error PulsedUpdateCudaImpl(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::Buffer<ffi::F32> w_in,
                                ffi::Buffer<ffi::F32> pers_in, ffi::Buffer<ffi::F32> params, ffi::Buffer<ffi::F32> px,
                                ffi::Buffer<ffi::F32> pd, ffi::Buffer<ffi::S32> bl, ffi::Buffer<ffi::U32> key,
                                ffi::Buffer<ffi::S32> row_offset, ffi::ResultBuffer<ffi::F32> w_out,
                                ffi::ResultBuffer<ffi::F32> pers_out, int32_t kind, int32_t mode, int32_t bl_max,
                                ffi::Span<const double> scalars) {
  pulsed::Layout lay;
  if (auto e = pulsed::make_layout(w_in, pers_in, params, px, pd, bl, key, row_offset, kind, mode, bl_max, scalars,
                                   &lay))
    return *e;

  const size_t wbytes = static_cast<size_t>(w_in.element_count()) * sizeof(float);
  if (w_out->typed_data() != w_in.typed_data())
    cudaMemcpyAsync(w_out->typed_data(), w_in.typed_data(), wbytes, cudaMemcpyDeviceToDevice, stream);
  if (lay.has_pers && pers_out->typed_data() != pers_in.typed_data())
    cudaMemcpyAsync(pers_out->typed_data(), pers_in.typed_data(), wbytes, cudaMemcpyDeviceToDevice, stream);
  if (lay.T * lay.D * lay.X == 0 || lay.B == 0) return cuda_error("copy");

  Args a{};
  a.mode = lay.mode;
  a.bl_max = lay.bl_max;
  a.nw = lay.nw;
  a.T = lay.T;
  a.B = lay.B;
  a.D = lay.D;
  a.X = lay.X;
  a.w = w_out->typed_data();
  a.pers = lay.has_pers ? pers_out->typed_data() : nullptr;
  a.params = params.typed_data();
  a.px = px.typed_data();
  a.pd = pd.typed_data();
  a.bl = bl.typed_data();
  a.key = key.typed_data();
  a.row_offset = row_offset.typed_data();
  a.params_ts = lay.params_ts;
  a.px_ts = lay.px_ts;
  a.pd_ts = lay.pd_ts;
  a.bl_ts = lay.bl_ts;
  a.key_ts = lay.key_ts;
  a.ro_ts = lay.ro_ts;

  // scratch: sample keys, and the bit lines in mode 0
  const int64_t tk = lay.key_ts ? lay.T : 1;
  const bool x_tiled = lay.key_ts || lay.px_ts || lay.bl_ts;
  const bool d_tiled = lay.key_ts || lay.pd_ts || lay.bl_ts || lay.ro_ts;
  const int64_t tx = x_tiled ? lay.T : 1, td = d_tiled ? lay.T : 1;
  const int64_t nkeys = tk * lay.B * 2;
  const int64_t nx = lay.mode == 0 ? tx * lay.B * lay.nw * lay.X : 0;
  const int64_t nd = lay.mode == 0 ? td * lay.B * lay.nw * lay.D : 0;
  auto mem = scratch.Allocate(static_cast<size_t>(nkeys + nx + nd) * sizeof(uint32_t), 256);
  if (!mem.has_value()) return ffi::Error::Internal("rpujax_pulsed_update (CUDA): scratch allocation failed");
  a.skeys = static_cast<uint32_t*>(mem.value());
  a.skeys_ts = lay.key_ts ? 2 * lay.B : 0;
  a.xbits = a.skeys + nkeys;
  a.xbits_ts = x_tiled ? lay.B * lay.nw * lay.X : 0;
  a.dbits = a.xbits + nx;
  a.dbits_ts = d_tiled ? lay.B * lay.nw * lay.D : 0;

  const int threads = 256;
  sample_keys_kernel<<<static_cast<unsigned>((tk * lay.B + threads - 1) / threads), threads, 0, stream>>>(a, tk);
  if (lay.mode == 0 && nx + nd > 0) {
    bits_kernel<<<static_cast<unsigned>((nx + nd + threads - 1) / threads), threads, 0, stream>>>(a, tx, td);
  }
  switch (lay.kind) {
    case 0: launch_update<0>(a, lay.k, stream); break;
    case 1: launch_update<1>(a, lay.k, stream); break;
    case 2: launch_update<2>(a, lay.k, stream); break;
    case 3: launch_update<3>(a, lay.k, stream); break;
    case 4: launch_update<4>(a, lay.k, stream); break;
    case 5: launch_update<5>(a, lay.k, stream); break;
    default: launch_update<6>(a, lay.k, stream); break;
  }
  return cuda_error("kernel launch");
}

}  // namespace
}  // namespace pulsed_cuda
}  // namespace rpujax

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxPulsedUpdateCuda, rpujax::pulsed_cuda::PulsedUpdateCudaImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  RPUJAX_PULSED_UPDATE_SIGNATURE);

RPUJAX_FFI_REGISTER("rpujax_pulsed_update", RpujaxPulsedUpdateCuda);
