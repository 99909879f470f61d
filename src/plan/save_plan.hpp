// SavePlan: the pure description of one safetensors save, from TensorRefs and SaveOptions to
// every byte's destination. No I/O, no threads. Both writers (synchronous and asynchronous) carry
// out the same plan, which is why their files are byte-identical.
//
// Steps (spec §4-5, with quicksave's safe deviations documented in shared_tensors.hpp):
//   1. validate: unique names, no meta tensors (no bytes to save), contiguity if required;
//   2. de-duplicate identical views, recording `alias → kept` metadata;
//   3. split with the HF factory (sizes/ids from split_item_for_saved_tensor);
//   4. per file: header layout with {"format":"pt"} (+ user and alias metadata for one file);
//   5. the index text when sharded;
//   6. chunks: each file cut into pieces of at most chunk_bytes, aligned to chunk_bytes in the
//      file, each piece listing the header or tensor byte ranges it is made of.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "quicksave/safetensors.hpp"
#include "quicksave/save_options.hpp"
#include "quicksave/split.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::plan {

struct PlannedTensor {
  std::size_t source = 0;        // index into SavePlan::tensors
  std::uint64_t file_offset = 0; // absolute offset in the file
  std::uint64_t nbytes = 0;
};

struct PlannedFile {
  std::string filename;
  std::string header;                   // the file's first bytes (length + JSON)
  std::vector<PlannedTensor> tensors;   // in file order
  std::uint64_t file_bytes = 0;
};

// One piece of a chunk: `length` bytes taken from the header (tensor == kHeader) or from a
// tensor's C-order bytes starting at `source_offset`.
struct Segment {
  static constexpr std::size_t kHeader = static_cast<std::size_t>(-1);
  std::size_t tensor = kHeader;  // index into SavePlan::tensors, or kHeader
  std::uint64_t source_offset = 0;
  std::uint64_t length = 0;
};

struct Chunk {
  std::size_t file = 0;          // index into SavePlan::files
  std::uint64_t file_offset = 0;
  std::uint64_t length = 0;
  std::vector<Segment> segments; // in file order, lengths summing to `length`
};

struct SavePlan {
  std::string pattern;
  std::vector<TensorRef> tensors;          // the tensors written (aliases removed)
  StateDictSplit split;
  std::vector<PlannedFile> files;          // in split order
  std::optional<std::string> index_filename;
  std::string index_json;                  // written last, when sharded
  std::vector<Chunk> chunks;               // file by file, offset order
  std::uint64_t total_file_bytes = 0;      // sum of file_bytes
  std::uint64_t chunk_bytes = 0;
  std::vector<std::string> output_names() const;  // the files then the index, as published
};

inline constexpr std::uint64_t kDefaultChunkBytes = 8ull << 20;

// `remote_tensors_allowed`: tensors without data (data == nullptr, no storage) stand for tensors
// another process holds and writes (distributed saves); they are planned but never read here.
SavePlan make_save_plan(std::vector<TensorRef> tensors, const SaveOptions& options,
                        std::uint64_t chunk_bytes = kDefaultChunkBytes, bool remote_tensors_allowed = false);

}  // namespace quicksave::plan
