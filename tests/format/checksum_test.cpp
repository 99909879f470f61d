// The content hashes: XXH64 against the reference vectors of xxHash's specification (the digest
// `quicksave verify` prints must equal `xxhsum -H64`), streaming equal to one call however the
// bytes are cut, and the hex form's round trip.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "format/checksum.hpp"

namespace quicksave::format {
namespace {

TEST(Xxh64, ReferenceVectors) {
  EXPECT_EQ(xxh64("", 0), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(xxh64("abc", 3), 0x44BC2CF5AD770999ull);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(xxh64(fox.data(), fox.size()), 0x0B242D361FDA71BCull);
}

TEST(Xxh64, StreamingEqualsOneCallForEveryCut) {
  std::vector<unsigned char> bytes(1000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 131 + 7);
  const std::uint64_t whole = xxh64(bytes.data(), bytes.size());
  for (std::size_t step : {1u, 3u, 31u, 32u, 33u, 999u, 1000u}) {
    Xxh64 hash;
    for (std::size_t at = 0; at < bytes.size(); at += step) hash.update(bytes.data() + at, std::min(step, bytes.size() - at));
    EXPECT_EQ(hash.digest(), whole) << "step " << step;
  }
  EXPECT_EQ(Xxh64().digest(), xxh64("", 0));
}

TEST(HashHex, RoundTripsAndRejectsOtherText) {
  EXPECT_EQ(hash_to_hex(0x44BC2CF5AD770999ull), "44bc2cf5ad770999");
  EXPECT_EQ(hash_from_hex("44bc2cf5ad770999"), 0x44BC2CF5AD770999ull);
  EXPECT_EQ(hash_from_hex("44BC2CF5AD770999"), std::nullopt);
  EXPECT_EQ(hash_from_hex("44bc2cf5ad77099"), std::nullopt);
}

}  // namespace
}  // namespace quicksave::format
