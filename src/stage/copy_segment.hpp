// stage::copy_segment: the host memory gather behind every staging copy of a host tensor (the
// host copier, the CUDA copier's host pieces, the synchronous writer and the checksum pass).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quicksave/tensor_ref.hpp"

namespace quicksave::stage {

// Copies the bytes [source_offset, source_offset + length) of `tensor`'s C-order image to `dst`,
// gathering a strided view. Host memory only; throws invalid_argument for a tensor whose strides
// or range do not fit it.
void copy_segment(const TensorRef& tensor, std::uint64_t source_offset, std::uint64_t length, std::byte* dst);

}  // namespace quicksave::stage
