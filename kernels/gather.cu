// gather: many small device pieces (biases, norms, scalars) copied into one staging buffer, one
// block per piece, up to kGatherEntriesPerLaunch pieces per launch with the piece table passed
// as the kernel's parameter (no table upload, no host buffer to keep alive). Each block copies
// with the widest word that the piece's source and destination alignments allow.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "kernels/cuda_error.hpp"
#include "kernels/staging_kernels.hpp"
#include "kernels/staging_math.hpp"

namespace quicksave::kernels {
namespace {

constexpr unsigned kThreads = 256;

__global__ void __launch_bounds__(kThreads) gather_kernel(const __grid_constant__ detail::GatherBatch batch) {
  for (std::uint32_t i = blockIdx.x; i < batch.count; i += gridDim.x) {
    const detail::GatherPiece& piece = batch.pieces[i];
    detail::copy_piece(piece.src, batch.dst + piece.dst_offset, piece.bytes, threadIdx.x, blockDim.x);
  }
}

}  // namespace

void gather(const GatherEntry* entries, std::size_t count, void* dst, CUstream_st* stream) {
  // 32 KB: on the heap rather than on a worker thread's stack.
  auto batch = std::make_unique<detail::GatherBatch>();
  std::size_t next = 0;
  while (next < count) {
    const std::size_t start = next;
    next = detail::fill_gather_batch(entries, count, start, dst, *batch);
    if (batch->count == 0) continue;
    void* args[] = {batch.get()};
    // The parameter is copied when the launch is enqueued, so the batch is reused at once.
    cuda_check(::cudaLaunchKernel(reinterpret_cast<const void*>(&gather_kernel), dim3(batch->count), dim3(kThreads),
                                  args, 0, stream),
               "cudaLaunchKernel(gather)",
               "pieces=" + std::to_string(batch->count) + ", entries " + std::to_string(start) + ".." +
                   std::to_string(next));
  }
}

}  // namespace quicksave::kernels
