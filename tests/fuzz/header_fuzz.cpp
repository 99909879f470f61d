// libFuzzer target for the safetensors header reader and the index reader. The reader must turn
// every input into a Header or a precise problem: no crash, no exception, no out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  auto length = quicksave::check_header_length(bytes, size);
  if (const auto* n = std::get_if<std::uint64_t>(&length)) {
    const std::string_view json(reinterpret_cast<const char*>(data) + 8, *n);
    (void)quicksave::check_header(json, size);
  }
  try {
    (void)quicksave::parse_index_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const quicksave::Error& e) {
    if (e.code() != quicksave::ErrorCode::corrupt) __builtin_trap();
  }
  return 0;
}
