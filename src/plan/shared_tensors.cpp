// Shared-tensor de-duplication for the safetensors path; see shared_tensors.hpp for the policy
// and how it differs from the reference's `_remove_duplicate_names`.
#include "plan/shared_tensors.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace quicksave::plan {
namespace {

// Everything that makes two names the same tensor, not just the same memory.
struct ViewKey {
  StorageKey storage;
  std::uint64_t offset;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  friend auto operator<=>(const ViewKey&, const ViewKey&) = default;
};

std::vector<std::int64_t> effective_strides(const TensorRef& t) {
  if (!t.strides.empty()) return t.strides;
  std::vector<std::int64_t> strides(t.shape.size());
  std::int64_t step = 1;
  for (std::size_t i = t.shape.size(); i-- > 0;) {
    strides[i] = step;
    step *= t.shape[i];
  }
  return strides;
}

}  // namespace

DedupResult remove_duplicate_names(const std::vector<TensorRef>& tensors, const std::vector<std::string>& discard) {
  std::vector<std::vector<std::size_t>> groups;  // first-appearance order
  std::map<ViewKey, std::size_t> group_of;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorRef& t = tensors[i];
    // The reference never treats meta tensors or storage-less/empty storages as shared.
    if (t.device.kind == DeviceKind::meta || t.storage_base == nullptr || t.storage_nbytes == 0) continue;
    ViewKey key{t.storage_key(), t.storage_offset_bytes(), t.dtype, t.shape, effective_strides(t)};
    auto [it, inserted] = group_of.try_emplace(std::move(key), groups.size());
    if (inserted) groups.emplace_back();
    groups[it->second].push_back(i);
  }

  const std::set<std::string> discard_set(discard.begin(), discard.end());
  DedupResult result;
  std::vector<bool> removed(tensors.size(), false);
  for (const auto& group : groups) {
    if (group.size() < 2) continue;
    std::vector<std::string> names;
    for (const std::size_t i : group) names.push_back(tensors[i].name);
    std::sort(names.begin(), names.end());
    // The reference's rule: the first name in code-point order, avoiding discarded names when
    // any other is left. (std::string compares bytes; UTF-8 byte order is code-point order.)
    std::string keep = names.front();
    for (const auto& name : names) {
      if (!discard_set.count(name)) {
        keep = name;
        break;
      }
    }
    for (const auto& name : names) {
      if (name != keep) result.aliases.emplace_back(name, keep);
    }
    for (const std::size_t i : group) removed[i] = tensors[i].name != keep;
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!removed[i]) result.kept.push_back(i);
  }
  return result;
}

void add_alias_metadata(Metadata& metadata, const std::vector<std::pair<std::string, std::string>>& aliases) {
  for (const auto& [alias, kept] : aliases) {
    if (!metadata.contains(alias)) metadata.set(alias, kept);
  }
}

std::vector<SplitItem> split_items_for_saved_tensors(const std::vector<TensorRef>& tensors) {
  std::vector<SplitItem> items;
  items.reserve(tensors.size());
  for (const TensorRef& t : tensors) {
    SplitItem item{.name = t.name};
    item.storage_size = static_cast<std::int64_t>(t.nbytes());
    if (t.storage_base == nullptr && item.storage_size == 0 && t.device.kind != DeviceKind::meta) {
      item.storage = t.storage_key();  // (device, 0, 0): grouped, like the reference
    } else {
      // Its own storage: unique by name (names are unique in a state dict).
      item.storage = StorageKey{"tensor:" + t.name, 0, static_cast<std::uint64_t>(item.storage_size)};
    }
    items.push_back(std::move(item));
  }
  return items;
}

SplitItem split_item_for_storage(const TensorRef& tensor) {
  SplitItem item{.name = tensor.name};
  if (tensor.device.kind == DeviceKind::meta) {
    item.storage_size = static_cast<std::int64_t>(tensor.nbytes());
  } else {
    item.storage = tensor.storage_key();
    item.storage_size = static_cast<std::int64_t>(tensor.storage_nbytes);
  }
  return item;
}

}  // namespace quicksave::plan
