#include "quicksave/dtype.hpp"

#include <array>

namespace quicksave {
namespace {

struct DTypeInfo {
  std::string_view name;
  int bits;
};

// Indexed by DType; names and bit sizes from safetensors tensor.rs.
constexpr std::array<DTypeInfo, kDTypeCount> kTable{{
    {"BOOL", 8},    {"F4", 4},           {"F6_E2M3", 6},      {"F6_E3M2", 6},  {"U8", 8},
    {"I8", 8},      {"F8_E5M2", 8},      {"F8_E4M3", 8},      {"F8_E8M0", 8},  {"F8_E4M3FNUZ", 8},
    {"F8_E5M2FNUZ", 8}, {"I16", 16},     {"U16", 16},         {"F16", 16},     {"BF16", 16},
    {"I32", 32},    {"U32", 32},         {"F32", 32},         {"C64", 64},     {"F64", 64},
    {"I64", 64},    {"U64", 64},
}};

}  // namespace

std::string_view dtype_name(DType dtype) noexcept { return kTable[static_cast<int>(dtype)].name; }

int dtype_bits(DType dtype) noexcept { return kTable[static_cast<int>(dtype)].bits; }

std::optional<DType> dtype_from_name(std::string_view name) noexcept {
  for (int i = 0; i < kDTypeCount; ++i) {
    if (kTable[i].name == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace quicksave
