// locate_checkpoint over a folder view the caller already holds (the loaders read shard paths
// through the same view). The public form, which makes the view itself, is in quicksave/reader.hpp.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "commit/recovery.hpp"
#include "quicksave/reader.hpp"

namespace quicksave::read {

CheckpointFiles locate_checkpoint(const commit::CheckpointView& view, bool safe, const std::optional<std::string>& filename_pattern);

}  // namespace quicksave::read
