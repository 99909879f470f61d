// The Hugging Face shard index (`model.safetensors.index.json`) and shard file names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "quicksave/metadata.hpp"

namespace quicksave {

inline constexpr std::string_view kSafetensorsPattern = "model{suffix}.safetensors";
inline constexpr std::string_view kPytorchPattern = "pytorch_model{suffix}.bin";
inline constexpr std::string_view kTensorflowPattern = "tf_model{suffix}.h5";
// Index files larger than this are refused before being read, as safetensors headers over
// kMaxHeaderBytes are (about 3 million entries fit).
inline constexpr std::uint64_t kMaxIndexBytes = 100'000'000;

struct ShardIndex {
  Metadata metadata;                                            // "total_size" first, then the user's
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor → shard file, in order
};

// Serialises exactly as Python's `json.dump(index, f, indent=2)` does (ASCII escapes, key order
// kept, no trailing newline), so the bytes equal the reference's.
std::string index_to_json(const ShardIndex& index);

// Strict reader: an object with a "weight_map" object of string → string (no duplicate keys) and
// an optional "metadata" object of scalars. Throws Error(corrupt) with the reason otherwise.
ShardIndex parse_index_json(std::string_view text);

// Formats a filename pattern the way Python's `pattern.format(suffix=...)` does: `{suffix}` is
// replaced, `{{`/`}}` are literal braces. Any other field, a positional `{}`, a conversion or
// format spec, or an unmatched brace throws invalid_argument.
std::string format_filename_pattern(std::string_view pattern, std::string_view suffix);
// True when the pattern contains a `{suffix}` field.
bool pattern_has_suffix(std::string_view pattern);
// "-00002-of-00005" (1-based, at least five digits each, wider beyond 99999 as Python does).
std::string shard_suffix(std::size_t one_based_index, std::size_t shard_count);
// The index's file name for a pattern: pattern.format(suffix="") + ".index.json".
std::string index_filename(std::string_view pattern);

// Checks one weight_map value the way `_load_sharded_checkpoint` does: no drive, root or `..`
// (Windows path rules on every OS), and the same extension as `pattern`'s file. Throws
// invalid_argument with the reference's message, naming `index_file`.
void validate_shard_filename(std::string_view shard, std::string_view pattern,
                             std::string_view index_file);

}  // namespace quicksave
