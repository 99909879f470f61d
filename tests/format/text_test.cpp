#include <gtest/gtest.h>

#include "format/text.hpp"

namespace quicksave::format {
namespace {

TEST(Text, PythonFloatSpelling) {
  EXPECT_EQ(python_float_text(1.0, true), "1.0");
  EXPECT_EQ(python_float_text(0.1, true), "0.1");
  EXPECT_EQ(python_float_text(-2.5, true), "-2.5");
  EXPECT_EQ(python_float_text(1e-5, true), "1e-05");
  EXPECT_EQ(python_float_text(0.0001, true), "0.0001");
  EXPECT_EQ(python_float_text(1e16, true), "1e+16");
  EXPECT_EQ(python_float_text(1234567890123456.0, true), "1234567890123456.0");
  EXPECT_EQ(python_float_text(1.5e300, true), "1.5e+300");
  EXPECT_EQ(python_float_text(0.0, true), "0.0");
  EXPECT_EQ(python_float_text(-0.0, true), "-0.0");
  EXPECT_EQ(python_float_text(1.0 / 0.0, true), "Infinity");
  EXPECT_EQ(python_float_text(0.0 / 0.0, true), "NaN");
}

TEST(Text, PythonRepr) {
  EXPECT_EQ(python_repr("0x10"), "'0x10'");
  EXPECT_EQ(python_repr(""), "''");
  EXPECT_EQ(python_repr("it's"), "\"it's\"");
  EXPECT_EQ(python_repr("a'b\"c"), "'a\\'b\"c'");
  EXPECT_EQ(python_repr("a\\b\n\x01"), "'a\\\\b\\n\\x01'");
  EXPECT_EQ(python_repr("\xef\xbc\x91"), "'\xef\xbc\x91'");
}

TEST(Text, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8("plain ascii é 权 🙂"));
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xe6\x9d"));          // truncated
}

}  // namespace
}  // namespace quicksave::format
