// libFuzzer target for the index reader (parse_index_json, a SAX parser that keeps the file's
// order): every input is an index or a corrupt error, and an accepted index writes back to JSON
// that parses to the same index (the writer and the reader agree).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  quicksave::ShardIndex index;
  try {
    index = quicksave::parse_index_json(text);
  } catch (const quicksave::Error& e) {
    if (e.code() != quicksave::ErrorCode::corrupt) __builtin_trap();
    return 0;
  }
  const std::string written = quicksave::index_to_json(index);
  const quicksave::ShardIndex again = quicksave::parse_index_json(written);
  if (again.weight_map != index.weight_map) __builtin_trap();
  if (quicksave::index_to_json(again) != written) __builtin_trap();
  return 0;
}
