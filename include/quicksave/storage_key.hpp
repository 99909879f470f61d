// StorageKey: the identity of the memory a tensor views, which the Hugging Face planner groups
// tensors by (huggingface_hub's get_torch_storage_id: device, storage address, storage size).
#pragma once

#include <compare>
#include <cstdint>
#include <string>

namespace quicksave {

// Two tensors share a storage when all three fields are equal.
struct StorageKey {
  std::string device;     // "cpu", "cuda:0", ...
  std::uint64_t base = 0; // address (or any id) of the storage
  std::uint64_t nbytes = 0;
  friend auto operator<=>(const StorageKey&, const StorageKey&) = default;
};

}  // namespace quicksave
