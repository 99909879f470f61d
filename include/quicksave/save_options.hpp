// What a Hugging Face style safetensors save takes, shared by the synchronous writer and the
// asynchronous Checkpointer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "quicksave/metadata.hpp"
#include "quicksave/split.hpp"

namespace quicksave {

// A CUDA stream named by its runtime handle (cudaStream_t), opaque so that no CUDA header is
// needed here; from LibTorch: `c10::cuda::getCurrentCUDAStream(d).stream()`.
struct ProducerStream {
  int device = 0;
  void* stream = nullptr;
};

struct SaveOptions {
  // Default "model{suffix}.safetensors".
  std::optional<std::string> filename_pattern;
  // Non-contiguous tensors are written in C order when true; refused (like safetensors) when false.
  bool force_contiguous = true;
  ShardSize max_shard_size = ShardSize("5GB");
  // User metadata: goes into a single file's header (string values only) or into the index.
  Metadata metadata;
  // Only the main process removes stale shards of the pattern from the directory.
  bool is_main_process = true;
  // Names to avoid keeping when several names are the same tensor.
  std::vector<std::string> shared_tensors_to_discard;
  // CUDA tensors: device d's tensors are copied after the work queued so far (at save_async) on
  // the stream named for d. A device not named keeps its tensors' own producer stream (the torch
  // adapter's: the device's current stream), else the legacy default stream.
  std::vector<ProducerStream> producer_streams;
  // Another save holds the folder (its writer lock): wait for it to finish instead of failing
  // at once with ErrorCode::busy.
  bool wait_for_lock = false;
  // Hash every tensor's bytes (XXH3-64, from the staged bytes) into the checksum manifest published
  // with the checkpoint, which `quicksave verify` and verifying loads check.
  bool checksums = true;

  std::string pattern() const;
};

}  // namespace quicksave
