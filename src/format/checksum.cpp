#include "format/checksum.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace quicksave::format {

std::uint64_t xxh3_64(const void* data, std::size_t length) { return XXH3_64bits(data, length); }

struct Xxh64::State {
  XXH64_state_t state;
};
Xxh64::Xxh64() : state_(std::make_unique<State>()) { XXH64_reset(&state_->state, 0); }
Xxh64::~Xxh64() = default;
void Xxh64::update(const void* data, std::size_t length) { XXH64_update(&state_->state, data, length); }
std::uint64_t Xxh64::digest() const { return XXH64_digest(&state_->state); }
std::uint64_t xxh64(const void* data, std::size_t length) { return XXH64(data, length, 0); }

std::string hash_to_hex(std::uint64_t hash) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(16, '0');
  for (int i = 15; i >= 0; --i, hash >>= 4) hex[static_cast<std::size_t>(i)] = kDigits[hash & 0xf];
  return hex;
}

std::optional<std::uint64_t> hash_from_hex(std::string_view hex) {
  if (hex.size() != 16) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : hex) {
    value <<= 4;
    if (c >= '0' && c <= '9') value |= static_cast<std::uint64_t>(c - '0');
    else if (c >= 'a' && c <= 'f') value |= static_cast<std::uint64_t>(c - 'a' + 10);
    else return std::nullopt;
  }
  return value;
}

}  // namespace quicksave::format
