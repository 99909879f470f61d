#include "plan/tensor_view_check.hpp"

#include <string>

#include "quicksave/error.hpp"

namespace quicksave::plan {
namespace {

[[noreturn]] void fail(std::string_view who, const TensorRef& t, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, std::string(who) + ": tensor '" + t.name + "' " + what);
}

// Bytes from `data` to the end of the furthest element a strided view reaches (0 when empty).
std::uint64_t reach_bytes(std::string_view who, const TensorRef& t, std::uint64_t element_bytes) {
  std::uint64_t last = 0;  // element offset of the last element
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    if (t.shape[i] == 0) return 0;
    std::uint64_t step = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(t.shape[i] - 1), static_cast<std::uint64_t>(t.strides[i]), &step) ||
        __builtin_add_overflow(last, step, &last)) {
      fail(who, t, "has strides whose extent overflows");
    }
  }
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(last, element_bytes, &bytes) || __builtin_add_overflow(bytes, element_bytes, &bytes)) {
    fail(who, t, "has strides whose extent overflows");
  }
  return bytes;
}

}  // namespace

ViewExtent check_view(const TensorRef& t, std::string_view who) {
  for (const std::int64_t size : t.shape) {
    if (size < 0) fail(who, t, "has a negative dimension (" + std::to_string(size) + ")");
  }
  if (!t.strides.empty()) {
    if (t.strides.size() != t.shape.size()) {
      fail(who, t, "has " + std::to_string(t.strides.size()) + " strides for " + std::to_string(t.shape.size()) + " dimensions");
    }
    for (const std::int64_t stride : t.strides) {
      if (stride < 0) fail(who, t, "has a negative stride (" + std::to_string(stride) + ")");
    }
  }
  ViewExtent extent;
  extent.nbytes = t.nbytes();
  extent.contiguous = t.strides.empty() || t.is_contiguous();
  if (extent.nbytes == 0) return extent;
  if (t.data == nullptr) fail(who, t, "has no data pointer");
  extent.reach = extent.nbytes;
  if (!extent.contiguous) {
    const int bits = dtype_bits(t.dtype);
    if (bits % 8 != 0) {
      fail(who, t, "is a strided view of a sub-byte dtype (" + std::string(dtype_name(t.dtype)) + "); such tensors must be contiguous");
    }
    extent.reach = reach_bytes(who, t, static_cast<std::uint64_t>(bits / 8));
  }
  if (t.storage_base != nullptr) {
    const auto data = reinterpret_cast<std::uintptr_t>(t.data);
    const auto base = reinterpret_cast<std::uintptr_t>(t.storage_base);
    if (data < base || data - base > t.storage_nbytes || extent.reach > t.storage_nbytes - (data - base)) {
      fail(who, t, "reaches " + std::to_string(extent.reach) + " bytes from storage offset " +
                       std::to_string(static_cast<std::int64_t>(data - base)) + ", beyond its storage of " +
                       std::to_string(t.storage_nbytes) + " bytes");
    }
  }
  return extent;
}

}  // namespace quicksave::plan
