// CudaCopier: the Copier for chunks that read GPU memory (CUDA builds; DESIGN.md §3, stage).
//
// Per chunk and per device the chunk touches, on one of that device's own non-blocking copy
// streams (round robin, so that consecutive chunks overlap):
//   1. wait for an event recorded on the producer stream (by default the device's legacy default
//      stream, else the stream CudaCopierOptions::producer_stream names), so that the copy never
//      reads weights that queued GPU work is still writing;
//   2. large contiguous pieces: cudaMemcpyAsync straight into the (pinned) staging buffer;
//   3. small contiguous pieces: one gather kernel launch (kernels/) for all of them, and strided
//      pieces: one pack kernel each, both into the stream's device scratch buffer at the pieces'
//      positions in the chunk, then one cudaMemcpyAsync per run of adjacent scratch bytes;
//   4. a stream callback posts the completion to the executor (no CUDA call ever runs inside the
//      callback); the chunk's `done` runs there once every device's part and the host part
//      (header bytes and CPU tensors, memcpy on a worker) have finished, exactly once, with the
//      first error. A failure while enqueueing still waits for the work already queued, so the
//      staging buffer is never written after `done`.
// Chunks may mix CPU tensors and tensors on several GPUs.
//
// Events: a save should wait for the weights as they were when save_async was called, not for
// GPU work queued later (the next forward pass), so begin_save() records the producer events on
// the caller's thread and returns the save's own copier. copy_chunk() on the CudaCopier itself
// records them when each chunk is copied.
//
// The executor must run tasks on other threads, never inline in the call that posts them: stream
// callbacks post through it, and no CUDA call may run on a callback's thread.
//
// CUDA errors become quicksave::Error naming the call and the CUDA error (kernels/cuda_error.hpp).
// This header carries no CUDA types, so that the engine can hold a CudaCopier without the CUDA
// include path (stream handles are the runtime's opaque CUstream_st pointers).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "stage/copier.hpp"

struct CUstream_st;

namespace quicksave::stage {

using CudaStream = CUstream_st*;  // == cudaStream_t

struct CudaCopierOptions {
  unsigned streams_per_device = 2;            // copy streams per device (chunks alternate)
  std::uint64_t scratch_bytes = 8ull << 20;   // device scratch per stream, allocated on first use
  // Contiguous pieces shorter than this are gathered by a kernel rather than copied one by one:
  // below ~256 KiB a cudaMemcpyAsync costs more in fixed overhead than in transfer.
  std::uint64_t small_copy_bytes = 256ull << 10;
  // The stream whose queued work writes the weights of `device`; called on the thread that calls
  // begin_save() (so a framework's thread-local "current stream" is the caller's). Empty, or
  // returning null: the device's legacy default stream.
  std::function<CudaStream(int device)> producer_stream;
};

// What the copier did, summed over its lifetime (tests and benchmarks read it).
struct CudaCopierStats {
  std::uint64_t chunks = 0;            // chunk parts issued to a device
  std::uint64_t memcpy_calls = 0;      // cudaMemcpyAsync device-to-host calls
  std::uint64_t gather_launches = 0;
  std::uint64_t gathered_pieces = 0;
  std::uint64_t pack_launches = 0;
  std::uint64_t producer_events = 0;   // events recorded on producer streams
  std::uint64_t device_bytes = 0;      // bytes copied out of device memory
};

// CUDA devices this process can use; 0 without a driver or device (never throws).
int cuda_device_count() noexcept;

class CudaCopierState;

class CudaCopier final : public Copier {
 public:
  explicit CudaCopier(Executor executor, CudaCopierOptions options = {});
  // Waits for the copies still on its streams; saves made with begin_save() may outlive it (their
  // copiers keep the streams and buffers alive).
  ~CudaCopier() override;
  CudaCopier(const CudaCopier&) = delete;
  CudaCopier& operator=(const CudaCopier&) = delete;

  std::string name() const override { return "cuda"; }
  bool handles(const Device& device) const override;  // cpu and cuda
  // Records the producer events now (on this thread), then copies as described above.
  void copy_chunk(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst, CopyDone done) override;

  // The copier of one save of `tensors`: checks every CUDA tensor (device ordinal, pointer on that
  // device, strides inside the storage, at most 8 dimensions after merging when strided) and
  // records an event on the producer stream of every device they use, now (the tensors'
  // producer_stream, else CudaCopierOptions::producer_stream, else the legacy default). Throws
  // quicksave::Error: unavailable without a usable device, invalid_argument for bad tensors.
  std::shared_ptr<Copier> begin_save(const std::vector<TensorRef>& tensors);

  CudaCopierStats stats() const;

 private:
  std::shared_ptr<CudaCopierState> state_;
};

}  // namespace quicksave::stage
