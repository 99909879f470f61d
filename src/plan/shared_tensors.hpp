// The shared-tensor policy of the safetensors save path (spec §5), framework-agnostic.
//
// The reference (`_remove_duplicate_names`) groups names by storage and keeps the alphabetically
// first *complete* name of each group, dropping the others and recording `alias → kept` in the
// metadata. It therefore drops views that are not the same tensor (`part = full[2:5]` is lost),
// crashes on non-contiguous aliases, and refuses lone partial views. quicksave instead treats two
// names as the same tensor only when they are the *same view* (same storage, offset, dtype, shape
// and strides): those are de-duplicated with the reference's naming rule, and every other tensor
// is saved with its own bytes. Whenever the reference succeeds and its output is truthful, the
// result is identical.
#pragma once

#include <string>
#include <vector>

#include "quicksave/metadata.hpp"
#include "quicksave/split.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::plan {

struct DedupResult {
  std::vector<std::size_t> kept;  // indices into the input, in input order
  // alias → kept, in the reference's order (group by first appearance, aliases sorted).
  std::vector<std::pair<std::string, std::string>> aliases;
};

// Groups identical views; `discard` names are avoided as the kept name when possible.
DedupResult remove_duplicate_names(const std::vector<TensorRef>& tensors, const std::vector<std::string>& discard);

// Adds `alias → kept` entries to `metadata` without overriding keys the user already set.
void add_alias_metadata(Metadata& metadata, const std::vector<std::pair<std::string, std::string>>& aliases);

// The planner's view of the tensors that will be written (spec §5, after
// `_clean_state_dict_for_safetensors`): each counts as a storage of exactly its own bytes, as the
// reference's cleaned dict does (complete tensors, or contiguous copies). Empty tensors without
// storage keep the shared id the reference gives them, which groups them in the split.
std::vector<SplitItem> split_items_for_saved_tensors(const std::vector<TensorRef>& tensors);

// The reference's own view for split_torch_state_dict_into_shards: storage size and id, no
// de-duplication (spec §3).
SplitItem split_item_for_storage(const TensorRef& tensor);

}  // namespace quicksave::plan
