// libFuzzer target for the commit protocol's own files, which recovery and loads read from folders
// anyone may have written: the journal parser (decode_journal) and the checksum manifest parser.
// The first byte picks the parser. A journal is either refused as corrupt or every name it holds
// is a plain file name of its pattern inside the folder, and it writes back to the same text; a
// manifest is refused as corrupt or writes back to JSON that parses to the same ranges.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "commit/journal.hpp"
#include "commit/names.hpp"
#include "format/manifest.hpp"
#include "quicksave/error.hpp"

namespace {

constexpr std::string_view kTag = ".qs-0123456789abcdef";

void journal(std::string_view text) {
  quicksave::commit::Journal j;
  try {
    j = quicksave::commit::decode_journal(text, kTag);
  } catch (const quicksave::Error& e) {
    if (e.code() != quicksave::ErrorCode::corrupt) __builtin_trap();
    return;
  }
  for (const auto& e : j.entries) {
    if (!quicksave::commit::is_plain_file_name(e.final_name) || !quicksave::commit::is_checkpoint_file(e.final_name, j.pattern)) {
      __builtin_trap();
    }
  }
  for (const auto& s : j.stale) {
    if (!quicksave::commit::is_plain_file_name(s.name) || !quicksave::commit::is_checkpoint_file(s.name, j.pattern)) __builtin_trap();
  }
  if (quicksave::commit::encode_journal(j) != text) __builtin_trap();
}

void manifest(std::string_view text) {
  quicksave::format::Manifest m;
  try {
    m = quicksave::format::parse_manifest_json(text);
  } catch (const quicksave::Error& e) {
    if (e.code() != quicksave::ErrorCode::corrupt) __builtin_trap();
    return;
  }
  const auto again = quicksave::format::parse_manifest_json(quicksave::format::manifest_to_json(m));
  if (again.files.size() != m.files.size()) __builtin_trap();
  for (std::size_t f = 0; f < m.files.size(); ++f) {
    if (again.files[f].tensors.size() != m.files[f].tensors.size()) __builtin_trap();
    for (const auto& t : m.files[f].tensors) {
      for (const auto& r : t.ranges) {
        if (r.begin > r.end || r.end > m.files[f].bytes) __builtin_trap();
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) manifest(text);
  else journal(text);
  return 0;
}
