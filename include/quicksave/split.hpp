// The Hugging Face shard planner (`split_state_dict_into_shards_factory`) and size parsing.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "quicksave/index.hpp"
#include "quicksave/storage_key.hpp"

namespace quicksave {

// "5GB" (upstream's MAX_SHARD_SIZE).
inline constexpr std::int64_t kDefaultMaxShardSize = 5'000'000'000;

// `parse_size_to_int` with the reference's semantics: decimal units TB/GB/MB/KB (the last two
// characters, case-insensitive), a Python-float number, truncation toward zero ("1.005KB" → 1004),
// negative values accepted. Throws invalid_argument with the reference's messages.
std::int64_t parse_size_to_int(std::string_view size);

// A max shard size given as bytes or as a size string.
class ShardSize {
 public:
  ShardSize(std::int64_t bytes) : value_(bytes) {}  // NOLINT: implicit like Python's int
  ShardSize(int bytes) : value_(static_cast<std::int64_t>(bytes)) {}  // NOLINT
  ShardSize(std::string size) : value_(std::move(size)) {}  // NOLINT: implicit like Python's str
  ShardSize(const char* size) : value_(std::string(size)) {}  // NOLINT
  // Parses a string with parse_size_to_int.
  std::int64_t bytes() const;
  std::string to_string() const;

 private:
  std::variant<std::int64_t, std::string> value_;
};

// One state-dict entry as the factory sees it.
struct SplitItem {
  std::string name;
  bool is_string = false;               // bnb-style string values are skipped entirely
  std::int64_t storage_size = 0;        // get_storage_size(tensor)
  std::optional<StorageKey> storage;    // get_storage_id(tensor); nullopt = never grouped
};

struct StateDictSplit {
  Metadata metadata;   // exactly {"total_size": <int>}
  std::vector<std::pair<std::string, std::vector<std::string>>> filename_to_tensors;
  std::vector<std::pair<std::string, std::string>> tensor_to_filename;
  bool is_sharded = false;  // more than one distinct file name
  std::int64_t total_size() const;
};

// The factory over plain items. Same packing, ordering and naming as upstream, with one
// deliberate difference: a pattern without `{suffix}` that would need more than one shard
// throws invalid_argument instead of silently giving every shard the same name.
StateDictSplit split_state_dict_into_shards_factory(const std::vector<SplitItem>& items,
                                                    std::string_view filename_pattern,
                                                    const ShardSize& max_shard_size = kDefaultMaxShardSize);

// The factory over any state dict, with the reference's callbacks. `is_string` defaults to
// "never a string"; `get_storage_id` to "no storage id".
template <class Tensor>
StateDictSplit split_state_dict_into_shards_factory(
    const std::vector<std::pair<std::string, Tensor>>& state_dict,
    const std::function<std::int64_t(const Tensor&)>& get_storage_size,
    std::string_view filename_pattern, const ShardSize& max_shard_size = kDefaultMaxShardSize,
    const std::function<std::optional<StorageKey>(const Tensor&)>& get_storage_id = {},
    const std::function<bool(const Tensor&)>& is_string = {}) {
  std::vector<SplitItem> items;
  items.reserve(state_dict.size());
  for (const auto& [name, tensor] : state_dict) {
    SplitItem item{.name = name};
    item.is_string = is_string && is_string(tensor);
    if (!item.is_string) {
      if (get_storage_id) item.storage = get_storage_id(tensor);
      item.storage_size = get_storage_size(tensor);
    }
    items.push_back(std::move(item));
  }
  return split_state_dict_into_shards_factory(items, filename_pattern, max_shard_size);
}

}  // namespace quicksave
