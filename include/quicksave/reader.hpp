// Reading safetensors files: validated headers and zero-copy (mmap) access to tensor bytes.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "quicksave/index.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave {

class SafetensorsFile {
 public:
  // Opens `path` and validates its header against the file's size (every rule of
  // safetensors.hpp). With `use_mmap` the bytes are mapped (zero-copy), else read into memory.
  // Throws not_found, io, or corrupt with the file named in the message.
  static SafetensorsFile open(const std::filesystem::path& path, bool use_mmap = true);

  const Header& header() const;
  const std::filesystem::path& path() const;
  std::uint64_t file_size() const;
  // nullptr when the file has no tensor of that name.
  const TensorEntry* find(std::string_view name) const;
  // The tensor's bytes inside the mapping; valid while this object or keepalive() lives.
  std::span<const std::byte> data(const TensorEntry& tensor) const;
  // Shares ownership of the mapping, for tensors that view it without copying.
  std::shared_ptr<const void> keepalive() const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
};

// Reads and parses an index file (parse_index_json), naming the file in errors.
ShardIndex read_index_file(const std::filesystem::path& path);

// A checkpoint folder's files, found by huggingface_hub's load_torch_model rules: the pattern is
// `filename_pattern`, else model{suffix}.safetensors (pytorch_model{suffix}.bin when `safe` is
// false and there is no safetensors index); its index when present, else the only *.safetensors
// (*.bin when not `safe`) file. A folder that an interrupted save left leftovers in is read as
// its complete checkpoint (checkpoint_folder_view): the paths may name the files holding it.
// Throws not_found when the folder is missing or holds no such checkpoint (or several files).
struct CheckpointFiles {
  std::optional<std::filesystem::path> index;   // a sharded checkpoint's index
  std::optional<std::filesystem::path> single;  // or its only file
  std::string pattern;                          // the pattern its file names follow
};
CheckpointFiles locate_checkpoint(const std::filesystem::path& directory, bool safe = true,
                                  const std::optional<std::string>& filename_pattern = std::nullopt);

}  // namespace quicksave
