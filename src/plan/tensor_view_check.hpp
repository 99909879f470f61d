// check_view: the geometry every reader of a TensorRef's memory relies on, checked in one place
// (the host gather and the CUDA copier both call it before touching a byte): a malformed
// TensorRef, from DLPack say, must fail with a message instead of reading foreign memory.
#pragma once

#include <cstdint>
#include <string_view>

#include "quicksave/tensor_ref.hpp"

namespace quicksave::plan {

struct ViewExtent {
  std::uint64_t nbytes = 0;  // the tensor's own bytes, C order
  std::uint64_t reach = 0;   // bytes from `data` to the end of the furthest element it views
  bool contiguous = true;
};

// No negative dimension or stride, one stride per dimension, a data pointer when there are bytes,
// a sub-byte dtype only when contiguous, an extent that does not overflow, and (when the tensor
// names its storage) every element inside that storage. Throws Error(invalid_argument)
// "<who>: tensor '<name>' <what>".
ViewExtent check_view(const TensorRef& tensor, std::string_view who);

}  // namespace quicksave::plan
