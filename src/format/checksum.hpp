// Content hashes (xxHash): XXH3-64, the hash of quicksave's checksum manifest and commit marks,
// fast enough to run over every byte while it sits in a staging buffer (GB/s per core); and
// XXH64, the whole-file digest `quicksave verify` prints (the same as `xxhsum -H64`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace quicksave::format {

std::uint64_t xxh3_64(const void* data, std::size_t length);
inline std::uint64_t xxh3_64(std::string_view text) { return xxh3_64(text.data(), text.size()); }

// XXH64 (seed 0), streaming.
class Xxh64 {
 public:
  Xxh64();
  ~Xxh64();
  Xxh64(const Xxh64&) = delete;
  Xxh64& operator=(const Xxh64&) = delete;
  void update(const void* data, std::size_t length);
  std::uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};
std::uint64_t xxh64(const void* data, std::size_t length);

// 16 lowercase hex digits, and back (nullopt for anything else).
std::string hash_to_hex(std::uint64_t hash);
std::optional<std::uint64_t> hash_from_hex(std::string_view hex);

}  // namespace quicksave::format
