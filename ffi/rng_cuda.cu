// XLA:CUDA handlers exposing the shared RNG (rng.h); same operands and results as rng_cpu.cc
// (see rng_ffi.h), so for the same key the CPU and GPU results agree (bit for bit for threefry, to
// the rounding of logf/cosf for the normals).
#include <cuda_runtime.h>

#include "registry.h"
#include "rng_ffi.h"

namespace ffi = xla::ffi;
using rpujax::rng_ffi::keyed_words;
using rpujax::rng_ffi::Layout;

namespace {

constexpr int kThreads = 256;

__global__ void threefry_kernel(const uint32_t* __restrict__ key, const uint32_t* __restrict__ c0,
                                const uint32_t* __restrict__ c1, uint32_t* __restrict__ y0,
                                uint32_t* __restrict__ y1, int64_t n, int64_t per_key) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const auto w = keyed_words(key, c0, c1, e, per_key);
    y0[e] = w.y0;
    y1[e] = w.y1;
  }
}

__global__ void normals_kernel(const uint32_t* __restrict__ key, const uint32_t* __restrict__ c0,
                               const uint32_t* __restrict__ c1, float* __restrict__ z, int64_t n,
                               int64_t per_key) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const auto w = keyed_words(key, c0, c1, e, per_key);
    z[e] = rpujax::rng::box_muller(w.y0, w.y1);
  }
}

int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? blocks : 65535);  // grid-stride loops cover the rest
}

ffi::Error launch_status(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return ffi::Error::Internal(std::string(what) + ": " + cudaGetErrorString(err));
  }
  return ffi::Error::Success();
}

ffi::Error ThreefryImpl(cudaStream_t stream, ffi::Buffer<ffi::U32> key, ffi::Buffer<ffi::U32> c0,
                        ffi::Buffer<ffi::U32> c1, ffi::ResultBuffer<ffi::U32> y0, ffi::ResultBuffer<ffi::U32> y1) {
  Layout l;
  if (auto err = rpujax::rng_ffi::check_layout(key, c0, c1, &l); err.failure()) return err;
  if (l.n == 0) return ffi::Error::Success();
  threefry_kernel<<<grid_for(l.n), kThreads, 0, stream>>>(key.typed_data(), c0.typed_data(), c1.typed_data(),
                                                          y0->typed_data(), y1->typed_data(), l.n, l.per_key);
  return launch_status("rpujax_threefry kernel launch");
}

ffi::Error NormalsImpl(cudaStream_t stream, ffi::Buffer<ffi::U32> key, ffi::Buffer<ffi::U32> c0,
                       ffi::Buffer<ffi::U32> c1, ffi::ResultBuffer<ffi::F32> z) {
  Layout l;
  if (auto err = rpujax::rng_ffi::check_layout(key, c0, c1, &l); err.failure()) return err;
  if (l.n == 0) return ffi::Error::Success();
  normals_kernel<<<grid_for(l.n), kThreads, 0, stream>>>(key.typed_data(), c0.typed_data(), c1.typed_data(),
                                                         z->typed_data(), l.n, l.per_key);
  return launch_status("rpujax_box_muller_normals kernel launch");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxThreefryCuda, ThreefryImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  RPUJAX_RNG_OPERANDS
                                  .Ret<ffi::Buffer<ffi::U32>>()  // y0
                                  .Ret<ffi::Buffer<ffi::U32>>()  // y1
);
RPUJAX_FFI_REGISTER("rpujax_threefry", RpujaxThreefryCuda);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RpujaxBoxMullerNormalsCuda, NormalsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  RPUJAX_RNG_OPERANDS
                                  .Ret<ffi::Buffer<ffi::F32>>()  // z
);
RPUJAX_FFI_REGISTER("rpujax_box_muller_normals", RpujaxBoxMullerNormalsCuda);
