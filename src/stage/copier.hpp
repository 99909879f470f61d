// Copier: moves one chunk's source bytes (header and tensor pieces, see plan::Chunk) into a
// staging buffer. HostCopier does it with memcpy (gathering strided tensors) on worker threads;
// CudaCopier (CUDA builds) with cudaMemcpyAsync on its own streams after waiting on the producer
// stream, and kernels for strided and many-small tensors.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "plan/save_plan.hpp"

namespace quicksave::stage {

// Runs a task on the engine's workers.
using Executor = std::function<void(std::function<void()>)>;
// The outcome of one chunk's copy: nullptr on success, else the error (a quicksave::Error).
using CopyDone = std::function<void(std::exception_ptr error)>;

class Copier {
 public:
  virtual ~Copier() = default;
  virtual std::string name() const = 0;
  // True when this copier can read tensors on `device`.
  virtual bool handles(const Device& device) const = 0;
  // Copies `chunk` (every segment of it) into `dst` (at least chunk.length bytes) and then calls
  // `done` exactly once, with the error if any. Never throws; never blocks the caller for the copy.
  virtual void copy_chunk(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst, CopyDone done) = 0;
};

// memcpy/gather of host tensors, run through `executor`.
std::unique_ptr<Copier> make_host_copier(Executor executor);

}  // namespace quicksave::stage
