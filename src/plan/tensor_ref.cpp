#include "quicksave/tensor_ref.hpp"

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/safetensors.hpp"
#include "quicksave/save_options.hpp"

namespace quicksave {

std::string Device::str() const {
  switch (kind) {
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::meta: return "meta";
    case DeviceKind::cuda: return index < 0 ? "cuda" : "cuda:" + std::to_string(index);
  }
  return "unknown";
}

std::uint64_t TensorRef::numel() const {
  std::uint64_t n = 1;
  for (const auto dim : shape) {
    if (dim < 0) throw Error(ErrorCode::invalid_argument, "tensor `" + name + "` has a negative dimension");
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(dim), &n)) {
      throw Error(ErrorCode::invalid_argument, "tensor `" + name + "` has more elements than 64 bits count");
    }
  }
  return n;
}

std::uint64_t TensorRef::nbytes() const {
  std::vector<std::uint64_t> dims(shape.begin(), shape.end());
  return tensor_nbytes(dtype, dims);
}

bool TensorRef::is_contiguous() const {
  if (strides.empty()) return true;
  if (strides.size() != shape.size()) return false;
  std::int64_t expected = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;  // no elements: any strides describe the same (empty) image
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::uint64_t TensorRef::storage_offset_bytes() const {
  if (data == nullptr || storage_base == nullptr) return 0;
  return static_cast<std::uint64_t>(static_cast<const std::byte*>(data) - static_cast<const std::byte*>(storage_base));
}

bool TensorRef::is_complete() const {
  if (device.kind == DeviceKind::meta) return true;
  return data == storage_base && nbytes() == storage_nbytes;
}

StorageKey TensorRef::storage_key() const {
  return StorageKey{device.str(), reinterpret_cast<std::uintptr_t>(storage_base), storage_nbytes};
}

std::string SaveOptions::pattern() const { return filename_pattern.value_or(std::string(kSafetensorsPattern)); }

}  // namespace quicksave
