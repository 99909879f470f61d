// The pickle program (data.pkl) of a torch.save archive, read as a state dict of tensor records
// without LibTorch: which storage each tensor views, at which offset, with which sizes and strides.
// src/torch/pickle_reader.cpp turns the records into tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace quicksave::format {

// A storage record of the archive: ('storage', torch.<Type>Storage, key, location, numel).
struct PickleStorage {
  std::string type;      // "FloatStorage", ...
  std::string key;       // the archive entry is data/<key>
  std::string location;  // "cpu", "cuda:0", ...
  std::int64_t numel = 0;
  std::size_t element_size = 0;
  std::uint64_t nbytes() const { return static_cast<std::uint64_t>(numel) * element_size; }  // checked when parsed
};

struct PickleTensor {
  std::size_t storage = 0;  // index into PickleStateDict::storages
  std::int64_t offset = 0;  // in elements
  std::vector<std::int64_t> sizes, strides;
};

struct PickleStateDict {
  std::vector<PickleStorage> storages;                         // distinct keys, first-use order
  std::vector<std::pair<std::string, PickleTensor>> entries;  // the dict, in the file's order
};

// Bounds on what a pickle program may build; a state dict of any real model is far below them.
struct PickleLimits {
  std::size_t max_depth = 1000;        // nesting of containers
  std::size_t max_stack = 1u << 20;    // values on the stack at once
  std::size_t max_marks = 1u << 16;    // MARKs open at once
  std::size_t max_memo = 1u << 22;     // memo slots (keys are indices)
  std::size_t max_values = 1u << 22;   // values built in total (48 bytes each)
  std::size_t max_globals = 1u << 16;  // GLOBAL opcodes (picklers memoize each global once)
};

// Bytes per element of a torch storage class ("FloatStorage" → 4), or 0 when not supported.
std::size_t storage_element_size(std::string_view type);

// Runs the pickle program and returns the dict it builds. Only what a state dict of tensors needs
// is understood: dicts, lists, tuples, scalars, strings, collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the typed storage classes; any other
// global is refused, so no code can run. Every tensor is checked to lie inside its storage.
// Throws Error(corrupt) saying what is wrong and where; the caller adds the file's name.
PickleStateDict parse_torch_pickle(std::string_view program, const PickleLimits& limits = {});

}  // namespace quicksave::format
