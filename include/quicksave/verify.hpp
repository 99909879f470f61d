// Checking a checkpoint without loading it; both read only and change nothing on disk.
//   verify_checkpoint: everything `quicksave verify` checks (headers, index, every byte, the
//                      manifest, leftovers of interrupted saves), as a report;
//   verify_checksums:  the content alone against quicksave's checksum manifest (the XXH3-64 of
//                      every tensor's bytes, published atomically with the checkpoint; format in
//                      src/format/manifest.hpp). A folder that an interrupted save left leftovers
//                      in is checked as loads read it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
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

struct VerifiedFile {
  std::string name;
  std::string status = "ok";           // "ok", "invalid", "missing", "unreadable", "not checked"
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  std::optional<std::uint64_t> xxh64;  // of the whole file (as `xxhsum -H64`), when it was read completely
};

// One file or folder an interrupted save left (see `quicksave recover`).
struct LeftoverFile {
  std::filesystem::path path;
  std::string kind;               // "temporary", "journal", "backup", "staging directory", "commit mark", "draft"
  std::string tag;                // the save it belongs to (".qs-<hex>")
  bool save_in_progress = false;  // that save still holds the folder's lock: not a crash
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
  std::vector<LeftoverFile> leftovers; // of interrupted saves (none in progress: also a problem)
  bool manifest_found = false;         // quicksave's checksum manifest was there and checked
  std::uint64_t checksummed_tensors = 0;
  bool valid() const { return problems.empty(); }
};

struct VerifyOptions {
  // Called as the files are read: bytes read so far, bytes to read in all, the file being read.
  std::function<void(std::uint64_t done, std::uint64_t total, const std::string& file)> progress;
};

// `path`: a checkpoint folder, its index (*.safetensors.index.json) or one .safetensors file.
// Checks, in order (src/read/verify_checkpoint.cpp): leftovers of interrupted saves; finding the
// checkpoint (the loaders' rules for a folder); the index (JSON schema, shard names, total_size);
// every shard's header (the reader's rules) and every byte (XXH64 per file); index <-> shards
// consistency; every tensor against the checksum manifest when there is one. Never throws for a
// broken checkpoint: every finding is in the report.
VerifyReport verify_checkpoint(const std::filesystem::path& path, const VerifyOptions& options = {});

}  // namespace quicksave
