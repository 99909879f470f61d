// quicksave's checksum manifest: XXH3-64 hashes of every tensor's bytes, published atomically with
// the checkpoint beside its index as <pattern with no suffix>.quicksave-manifest.json (e.g.
// model.safetensors.quicksave-manifest.json), so the Hugging Face files stay byte-identical to
// huggingface_hub's and tools that do not know it ignore it.
//
//   {
//     "format": "quicksave-manifest", "version": 1, "hash": "xxh3-64",
//     "index": {"file": "model.safetensors.index.json", "xxh3": "<16 hex>"},      (sharded only)
//     "files": [
//       {"file": "model-00001-of-00002.safetensors", "bytes": <file size>,
//        "header_xxh3": "<16 hex: the file's first 8 + N bytes>",
//        "tensors": [{"name": "a.weight", "ranges": [[<begin>, <end>, "<16 hex>"], ...]}, ...]},
//       ...]
//   }
// A tensor's bytes [begin, end) are absolute file offsets; a tensor is hashed in several ranges
// when the save staged it in several chunks (hashes are taken from the staging buffers, so no
// second pass over the data is needed). A folder without a manifest loads and verifies as before.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quicksave::format {

struct ManifestRange {
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::uint64_t hash = 0;
};

struct ManifestTensor {
  std::string name;
  std::vector<ManifestRange> ranges;  // in file order
};

struct ManifestFile {
  std::string file;
  std::uint64_t bytes = 0;
  std::uint64_t header_hash = 0;
  std::vector<ManifestTensor> tensors;  // in file order
};

struct Manifest {
  std::optional<std::string> index_file;
  std::uint64_t index_hash = 0;
  std::vector<ManifestFile> files;
};

// The largest manifest a reader accepts.
inline constexpr std::size_t kMaxManifestBytes = 512ull << 20;

std::string manifest_to_json(const Manifest& manifest);
// Strict: throws Error(corrupt) naming the first broken rule (types, hex digits, ranges inside
// the file and in order).
Manifest parse_manifest_json(std::string_view text);

}  // namespace quicksave::format
