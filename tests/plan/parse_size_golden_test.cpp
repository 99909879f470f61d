// Every vector of golden/parse_size_cases.json, produced by the reference implementation.
#include <gtest/gtest.h>

#include "golden.hpp"
#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace {

TEST(ParseSizeGolden, EveryCaseMatchesTheReference) {
  const auto golden = testing::load_golden("parse_size_cases.json");
  int checked = 0;
  for (const auto& c : golden["cases"]) {
    const std::string input = c["input"];
    SCOPED_TRACE("input: '" + input + "'");
    if (c["raised"].is_null()) {
      EXPECT_EQ(parse_size_to_int(input), c["output"].get<std::int64_t>());
    } else {
      const std::string type = c["raised"]["type"];
      const std::string message = c["raised"]["message"];
      try {
        parse_size_to_int(input);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        if (type == "ValueError" && message.rfind("cannot convert", 0) != 0) {
          EXPECT_EQ(std::string(e.what()), message);
        } else {  // OverflowError / NaN: Python's bare message, with the input appended
          EXPECT_EQ(std::string(e.what()).rfind(message, 0), 0u) << e.what();
        }
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(golden["cases"].size()));
  EXPECT_GE(checked, 25);
}

TEST(ParseSize, MorePythonFloatSpellings) {
  EXPECT_EQ(parse_size_to_int("1_000KB"), 1'000'000);
  EXPECT_EQ(parse_size_to_int("5.KB"), 5000);
  EXPECT_EQ(parse_size_to_int("1E3kb"), 1'000'000);
  EXPECT_EQ(parse_size_to_int("\t3\u3000GB\n"), 3'000'000'000);
  EXPECT_EQ(parse_size_to_int("8.2GB"), 8'199'999'999);
  EXPECT_THROW(parse_size_to_int("1__0KB"), Error);
  EXPECT_THROW(parse_size_to_int("_10KB"), Error);
  EXPECT_THROW(parse_size_to_int("1e KB"), Error);
  EXPECT_THROW(parse_size_to_int("1e400TB"), Error);
  EXPECT_THROW(parse_size_to_int("nanKB"), Error);
  EXPECT_THROW(parse_size_to_int("1e10TB"), Error);  // beyond 64 bits: refused, not wrapped
}

TEST(ShardSize, IntegersPassThroughStringsAreParsed) {
  EXPECT_EQ(ShardSize(30).bytes(), 30);
  EXPECT_EQ(ShardSize(std::int64_t{-1}).bytes(), -1);
  EXPECT_EQ(ShardSize("5GB").bytes(), 5'000'000'000);
  EXPECT_THROW(ShardSize("5").bytes(), Error);
}

}  // namespace
}  // namespace quicksave
