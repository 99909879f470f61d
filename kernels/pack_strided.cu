// pack_strided: a byte range of a strided device tensor's C-order image, packed into contiguous
// device memory (the copier's scratch) with one thread per element. See staging_kernels.hpp for
// why the destination is device scratch rather than mapped host memory, and staging_math.hpp for
// the per-element arithmetic (shared with the host-side tests).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/cuda_error.hpp"
#include "kernels/staging_kernels.hpp"
#include "kernels/staging_math.hpp"

namespace quicksave::kernels {
namespace {

constexpr unsigned kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger ranges loop (grid stride).
constexpr std::uint64_t kMaxBlocks = 16384;

template <int E, typename Index>
__global__ void __launch_bounds__(kThreads) pack_kernel(const __grid_constant__ detail::PackParams p) {
  const std::uint64_t step = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  for (std::uint64_t k = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < p.count; k += step) {
    detail::pack_element<E, Index>(p, k);
  }
}

template <int E>
const void* pick_kernel(bool index32) {
  return index32 ? reinterpret_cast<const void*>(&pack_kernel<E, std::uint32_t>)
                 : reinterpret_cast<const void*>(&pack_kernel<E, std::uint64_t>);
}

}  // namespace

void pack_strided(const StridedView& view, std::uint64_t offset, std::uint64_t length, void* dst, CUstream_st* stream) {
  detail::PackPlan plan = detail::make_pack_plan(view, offset, length, dst);
  if (plan.empty) return;
  const void* kernel = nullptr;
  switch (plan.element_bytes) {
    case 1: kernel = pick_kernel<1>(plan.index32); break;
    case 2: kernel = pick_kernel<2>(plan.index32); break;
    case 4: kernel = pick_kernel<4>(plan.index32); break;
    default: kernel = pick_kernel<8>(plan.index32); break;
  }
  const std::uint64_t blocks = std::min<std::uint64_t>((plan.params.count + kThreads - 1) / kThreads, kMaxBlocks);
  void* args[] = {&plan.params};
  // cudaLaunchKernel reports a bad configuration (no kernel image for this GPU, ...) directly,
  // rather than through the thread's sticky last-error state.
  cuda_check(::cudaLaunchKernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), args, 0, stream),
             "cudaLaunchKernel(pack_strided)",
             "rank=" + std::to_string(plan.params.rank) + ", element_bytes=" + std::to_string(plan.element_bytes) +
                 ", offset=" + std::to_string(offset) + ", length=" + std::to_string(length));
}

}  // namespace quicksave::kernels
