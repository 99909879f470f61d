// ChecksumRecorder: the content hashes of one save, taken from the staged bytes of each chunk
// while they sit in the pool (no second pass over memory or disk), assembled into the manifest
// (format/manifest.hpp) that is published with the checkpoint. One hash per tensor segment of a
// chunk, so a tensor staged in several chunks has several ranges.
#pragma once

#include <cstddef>
#include <vector>

#include "format/manifest.hpp"
#include "plan/save_plan.hpp"

namespace quicksave::engine {

class ChecksumRecorder {
 public:
  // `chunks` are the chunks this process stages (the whole plan's, for a single process).
  ChecksumRecorder(const plan::SavePlan& plan, const std::vector<plan::Chunk>& chunks);
  // Hashes the tensor segments of chunk `chunk_index`, whose `chunk.length` staged bytes are at
  // `bytes`. Thread-safe for distinct chunks; each chunk is recorded once.
  void record(std::size_t chunk_index, const std::byte* bytes);
  // The manifest of every file, once every chunk has been recorded.
  format::Manifest manifest() const;

 private:
  const plan::SavePlan& plan_;
  const std::vector<plan::Chunk>& chunks_;
  std::vector<std::vector<std::uint64_t>> hashes_;  // [chunk][segment]; header segments unused
};

// The same hashes for a writer that holds one tensor's host bytes at a time (the synchronous
// writer writes straight from the tensors, fetching device tensors one by one).
class TensorChecksums {
 public:
  explicit TensorChecksums(const plan::SavePlan& plan);
  // Hashes every segment of tensor `tensor_index` from `host` (its bytes in host memory).
  void record(std::size_t tensor_index, const TensorRef& host);
  format::Manifest manifest() const;

 private:
  struct Place {
    std::size_t chunk = 0;
    std::size_t segment = 0;
  };
  const plan::SavePlan& plan_;
  std::vector<std::vector<Place>> places_;          // [tensor] → its segments
  std::vector<std::vector<std::uint64_t>> hashes_;  // [chunk][segment]
};

}  // namespace quicksave::engine
