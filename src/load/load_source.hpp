// LoadSource::State: what the load engine needs of an opened checkpoint, all validated at open:
// each shard's path, size and header; where each tensor's bytes are; and, for verified loads,
// the manifest's hashed ranges of each tensor (checked against the header they describe).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/manifest.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave {

struct LoadSource::State {
  struct File {
    std::filesystem::path path;  // where to read it (a crashed folder's view may redirect it)
    std::string name;            // its name in the index and the manifest
    std::uint64_t size = 0;
    Header header;
  };
  // Where one tensor's bytes are: [begin, begin + nbytes) of files[file], absolute offsets.
  struct Location {
    std::size_t file = 0;
    std::uint64_t begin = 0;
  };

  std::vector<File> files;
  std::vector<CheckpointTensor> tensors;
  std::vector<Location> locations;  // [tensor]
  std::unordered_map<std::string, std::size_t> by_name;
  // Verified sources only: [tensor] → its hashed ranges in file order, tiling [begin, begin + nbytes).
  bool has_manifest = false;
  std::vector<std::vector<format::ManifestRange>> ranges;
};

}  // namespace quicksave
