// split_state_dict_into_shards_factory: huggingface_hub `_base.py` L50-179, step for step.
// Greedy first-fit in key order; an oversized tensor becomes its own shard at once while the
// running shard stays open; aliases of a storage are appended to the shard of its first tensor.
#include <map>
#include <set>

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace {

std::int64_t checked_add(std::int64_t a, std::int64_t b) {
  std::int64_t out;
  if (__builtin_add_overflow(a, b, &out)) throw Error(ErrorCode::invalid_argument, "total state dict size overflows 64 bits");
  return out;
}

}  // namespace

std::int64_t StateDictSplit::total_size() const {
  const auto* v = metadata.find("total_size");
  if (v == nullptr) return 0;
  if (const auto* n = std::get_if<std::int64_t>(v)) return *n;
  return 0;
}

StateDictSplit split_state_dict_into_shards_factory(const std::vector<SplitItem>& items, std::string_view filename_pattern,
                                                    const ShardSize& max_shard_size) {
  const std::int64_t max_size = max_shard_size.bytes();
  pattern_has_suffix(filename_pattern);  // validates the pattern before any work, even for no shards

  {
    std::set<std::string_view> names;
    for (const auto& item : items) {
      if (!names.insert(item.name).second) {
        throw Error(ErrorCode::invalid_argument, "duplicate state dict key " + format::python_repr(item.name));
      }
    }
  }

  using Shard = std::vector<std::size_t>;  // indices into items, in placement order
  std::vector<Shard> shards;
  Shard current;
  std::int64_t current_size = 0;
  std::int64_t total_size = 0;
  std::vector<std::vector<std::size_t>> groups;  // storage groups, first-appearance order
  std::map<StorageKey, std::size_t> group_of;

  for (std::size_t i = 0; i < items.size(); ++i) {
    const SplitItem& item = items[i];
    if (item.is_string) continue;  // bnb serialization metadata: not a tensor
    if (item.storage) {
      auto [it, inserted] = group_of.try_emplace(*item.storage, groups.size());
      if (!inserted) {
        groups[it->second].push_back(i);  // an alias: neither sized nor placed now
        continue;
      }
      groups.push_back({i});
    }
    const std::int64_t size = item.storage_size;
    if (size > max_size) {  // oversized: its own shard, emitted before the open one
      total_size = checked_add(total_size, size);
      shards.push_back({i});
      continue;
    }
    if (checked_add(current_size, size) > max_size) {
      shards.push_back(std::move(current));
      current = {};
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
    total_size = checked_add(total_size, size);
  }
  if (!current.empty()) shards.push_back(std::move(current));

  std::vector<std::size_t> shard_of(items.size());
  for (std::size_t s = 0; s < shards.size(); ++s) {
    for (const std::size_t i : shards[s]) shard_of[i] = s;
  }
  for (const auto& group : groups) {
    Shard& shard = shards[shard_of[group.front()]];
    shard.insert(shard.end(), group.begin() + 1, group.end());
  }

  StateDictSplit split;
  split.metadata.set("total_size", total_size);
  const std::size_t shard_count = shards.size();
  if (shard_count > 1 && !pattern_has_suffix(filename_pattern)) {
    throw Error(ErrorCode::invalid_argument,
                "filename pattern " + format::python_repr(filename_pattern) + " has no {suffix} field but the state dict needs " +
                    std::to_string(shard_count) + " shards of at most " + std::to_string(max_size) +
                    " bytes: every shard would get the same name and all but the last would be lost. Add {suffix} to the "
                    "pattern or raise max_shard_size");
  }
  for (std::size_t s = 0; s < shard_count; ++s) {
    const std::string suffix = shard_count == 1 ? std::string() : shard_suffix(s + 1, shard_count);
    const std::string filename = format_filename_pattern(filename_pattern, suffix);
    std::vector<std::string> names;
    names.reserve(shards[s].size());
    for (const std::size_t i : shards[s]) {
      names.push_back(items[i].name);
      split.tensor_to_filename.emplace_back(items[i].name, filename);
    }
    split.filename_to_tensors.emplace_back(filename, std::move(names));
  }
  split.is_sharded = split.filename_to_tensors.size() > 1;
  return split;
}

}  // namespace quicksave
