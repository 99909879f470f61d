#include <gtest/gtest.h>

#include "quicksave/dtype.hpp"

namespace quicksave {
namespace {

TEST(DType, NamesRoundTripAndBitSizesMatchSafetensors) {
  const std::pair<const char*, int> expected[] = {
      {"BOOL", 8}, {"F4", 4},   {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8},
      {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16}, {"BF16", 16},
      {"I32", 32}, {"U32", 32}, {"F32", 32}, {"C64", 64}, {"F64", 64}, {"I64", 64}, {"U64", 64}};
  ASSERT_EQ(std::size(expected), static_cast<std::size_t>(kDTypeCount));
  for (int i = 0; i < kDTypeCount; ++i) {
    const auto dtype = static_cast<DType>(i);
    EXPECT_EQ(dtype_name(dtype), expected[i].first);
    EXPECT_EQ(dtype_bits(dtype), expected[i].second) << expected[i].first;
    EXPECT_EQ(dtype_from_name(expected[i].first), dtype);
  }
}

TEST(DType, UnknownAndWrongCaseNamesAreRejected) {
  EXPECT_FALSE(dtype_from_name("f32"));
  EXPECT_FALSE(dtype_from_name("F128"));
  EXPECT_FALSE(dtype_from_name(""));
}

TEST(DType, EnumOrderIsTheWritersSortOrder) {
  // safetensors sorts by dtype descending: U64 first, BOOL last.
  EXPECT_LT(DType::BOOL, DType::F4);
  EXPECT_LT(DType::F32, DType::C64);
  EXPECT_LT(DType::C64, DType::F64);
  EXPECT_LT(DType::I64, DType::U64);
}

}  // namespace
}  // namespace quicksave
