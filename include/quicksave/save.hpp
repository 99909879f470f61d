// Synchronous Hugging Face style safetensors save of framework-agnostic tensors (TensorRef), the
// byte-for-byte reference that the asynchronous Checkpointer matches. The torch API
// (save_torch_state_dict) is a thin adapter over this.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "quicksave/save_options.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave {

struct SaveResult {
  std::vector<std::string> files;          // written: the shards in order, then the index
  std::uint64_t bytes_written = 0;         // sum of the files' sizes
  std::string commit_mode;                 // "fresh", "exchange" or "in_place" (see io/commit.cpp)
  std::vector<std::string> removed_stale;  // files of the pattern that the new checkpoint replaced
  std::string backend;                     // the I/O backend that wrote the bytes
};

// Writes `tensors` (host memory) into `directory` (created if missing) as safetensors shards plus
// `model.safetensors.index.json` when sharded, then publishes them atomically. The previous
// checkpoint in `directory` stays loadable until the new one is durable.
SaveResult save_state_dict(std::vector<TensorRef> tensors, const std::filesystem::path& directory,
                           const SaveOptions& options = {});

// Completes or rolls back a save that a crash interrupted in `directory`; returns one line per
// action (empty when there was nothing to do). Loading and saving run it too.
std::vector<std::string> recover_checkpoint(const std::filesystem::path& directory);

}  // namespace quicksave
