// Full validation of a checkpoint (the engine of `quicksave verify`, also used by the demo).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cli/checkpoint_files.hpp"

namespace quicksave::cli {

struct VerifiedFile {
  std::string name;
  std::string status = "ok";           // "ok", "invalid", "missing", "unreadable", "not checked"
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  std::optional<std::uint64_t> xxh64;  // of the whole file, when it was read completely
};

struct VerifyReport {
  std::filesystem::path path;
  std::string kind = "none";           // "sharded", "single" or "none" (nothing found)
  std::optional<std::string> index;    // the index's file name
  std::vector<VerifiedFile> files;
  std::size_t tensors = 0;
  std::uint64_t data_bytes = 0;        // tensor bytes of the readable files
  std::uint64_t bytes_read = 0;
  std::vector<std::string> problems;   // each one makes the checkpoint invalid
  std::vector<std::string> warnings;   // worth knowing, not invalid
  std::vector<Leftover> leftovers;     // of interrupted saves (none in progress: also a problem)
  bool manifest_found = false;         // quicksave's checksum manifest was there and checked
  std::uint64_t checksummed_tensors = 0;
  bool valid() const { return problems.empty(); }
};

// Validates every header (the reader's rules), index ↔ shards consistency, reads every byte
// (checksumming it) and looks for an interrupted save. Changes nothing on disk. Never throws for
// a broken checkpoint: every finding is in the report. `progress` draws a bar on a terminal.
VerifyReport verify_checkpoint(const std::filesystem::path& path, bool progress);

}  // namespace quicksave::cli
