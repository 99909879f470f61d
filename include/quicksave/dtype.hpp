// The safetensors dtype table.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace quicksave {

// Declared in the safetensors crate's enum order (tensor.rs): writers sort tensors by this order,
// descending, so the numeric values matter.
enum class DType : std::uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};
inline constexpr int kDTypeCount = 22;

// "F32", "BF16", ... exactly as written in safetensors headers.
std::string_view dtype_name(DType dtype) noexcept;
// Inverse of dtype_name; nullopt for an unknown code (codes are case-sensitive).
std::optional<DType> dtype_from_name(std::string_view name) noexcept;
// Bits per element: 4 (F4), 6 (F6_*), 8, 16, 32 or 64.
int dtype_bits(DType dtype) noexcept;

}  // namespace quicksave
