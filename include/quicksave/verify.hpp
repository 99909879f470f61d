// Content verification against quicksave's checksum manifest (the XXH3-64 of every tensor's bytes,
// published atomically with the checkpoint; format in src/format/manifest.hpp). Reads only: a
// folder that an interrupted save left leftovers in is checked as loads read it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace quicksave {

struct ChecksumMismatch {
  std::string file;    // e.g. "model-00002-of-00004.safetensors" (or the index)
  std::string tensor;  // empty for a file's header or size, or the index
  std::uint64_t begin = 0;  // the byte range [begin, end) of the file that does not match
  std::uint64_t end = 0;
  std::string what;    // one line: "tensor a.weight bytes [1024, 2048) do not match the manifest"
};

struct ChecksumReport {
  bool manifest_found = false;  // false: nothing to check (a folder saved without checksums)
  std::string manifest;         // its file name
  std::uint64_t files_checked = 0;
  std::uint64_t tensors_checked = 0;
  std::uint64_t bytes_checked = 0;
  std::vector<ChecksumMismatch> mismatches;  // also a manifest that is itself unreadable
  bool ok() const { return mismatches.empty(); }
};

// Checks every byte the manifest of `pattern`'s checkpoint in `directory` describes. Throws only
// for a missing directory; every other problem is a mismatch in the report.
ChecksumReport verify_checksums(const std::filesystem::path& directory, const std::string& pattern = "model{suffix}.safetensors");

}  // namespace quicksave
