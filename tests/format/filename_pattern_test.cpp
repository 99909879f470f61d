#include <gtest/gtest.h>

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave {
namespace {

TEST(FilenamePattern, FormatsSuffixAnywhere) {
  EXPECT_EQ(format_filename_pattern("model{suffix}.safetensors", ""), "model.safetensors");
  EXPECT_EQ(format_filename_pattern("model{suffix}.safetensors", shard_suffix(2, 5)), "model-00002-of-00005.safetensors");
  EXPECT_EQ(format_filename_pattern("{suffix}weights.bin", shard_suffix(1, 3)), "-00001-of-00003weights.bin");
  EXPECT_EQ(format_filename_pattern("a{{b}}{suffix}", "-x"), "a{b}-x");
  EXPECT_EQ(format_filename_pattern("{suffix}{suffix}", "s"), "ss");
  EXPECT_EQ(shard_suffix(123456, 123456), "-123456-of-123456");
  EXPECT_EQ(index_filename("model{suffix}.safetensors"), "model.safetensors.index.json");
  EXPECT_EQ(index_filename("weights.pt"), "weights.pt.index.json");
}

TEST(FilenamePattern, RejectsWhatPythonFormatRejects) {
  for (const char* bad : {"model{suffix}{other}.bin", "m{}.bin", "m}.bin", "m{.bin", "m{suffix:>9}", "m{suffix!r}"}) {
    try {
      format_filename_pattern(bad, "");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    }
  }
  try {
    format_filename_pattern("model{suffix}{other}.bin", "");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'other'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(pattern_has_suffix("x{suffix}"));
  EXPECT_FALSE(pattern_has_suffix("x{{suffix}}"));
}

TEST(ShardFilenameValidation, RejectsEscapesWithTheReferenceMessage) {
  const std::string index = "/ckpt/model.safetensors.index.json";
  for (const char* bad : {"../malicious.safetensors", "/tmp/malicious.safetensors", "\\malicious.safetensors",
                          "C:malicious.safetensors", "C:\\malicious.safetensors", "\\\\server\\share\\malicious.safetensors",
                          "..\\malicious.safetensors", "a:b.safetensors", "sub/../../x.safetensors"}) {
    try {
      validate_shard_filename(bad, "model{suffix}.safetensors", index);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "Invalid shard filename '" + std::string(bad) + "' in index file '" + index +
                                           "'. Shard filenames must be relative paths without '..' components.");
    }
  }
  try {
    validate_shard_filename("model-00001-of-00001.bin", "model{suffix}.safetensors", index);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Expected '.safetensors' extension to match the index format."), std::string::npos);
  }
  EXPECT_NO_THROW(validate_shard_filename("sub/dir/x.safetensors", "model{suffix}.safetensors", index));
  EXPECT_NO_THROW(validate_shard_filename("a..b.safetensors", "model{suffix}.safetensors", index));
}

}  // namespace
}  // namespace quicksave
