// What a Hugging Face style safetensors save takes, shared by the synchronous writer and the
// asynchronous Checkpointer.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "quicksave/metadata.hpp"
#include "quicksave/split.hpp"

namespace quicksave {

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

  std::string pattern() const;
};

}  // namespace quicksave
