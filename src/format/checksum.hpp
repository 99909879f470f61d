// Content hashes: XXH3-64 (xxHash), the hash of quicksave's checksum manifest and commit marks.
// Fast enough to run over every byte while it sits in a staging buffer (GB/s per core).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace quicksave::format {

std::uint64_t xxh3_64(const void* data, std::size_t length);
inline std::uint64_t xxh3_64(std::string_view text) { return xxh3_64(text.data(), text.size()); }

// 16 lowercase hex digits, and back (nullopt for anything else).
std::string hash_to_hex(std::uint64_t hash);
std::optional<std::uint64_t> hash_from_hex(std::string_view hex);

}  // namespace quicksave::format
