// libFuzzer target for the torch.save archive reader: the zip directory reader and the pickle
// machine. An input starting with "PK" is read as an archive (its data.pkl is then run), any
// other input as a pickle program. Every input must end in a state dict whose tensors lie inside
// their storages, or in a corrupt error: no crash, no other exception, no unbounded memory.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "format/torch_pickle.hpp"
#include "format/zip_directory.hpp"
#include "quicksave/error.hpp"

namespace {

void check(const quicksave::format::PickleStateDict& dict) {
  for (const auto& [name, t] : dict.entries) {
    if (t.storage >= dict.storages.size() || t.sizes.size() != t.strides.size() || t.offset < 0) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    if (bytes.starts_with("PK")) {
      const auto zip = quicksave::format::read_zip_directory(size, [&](std::uint64_t offset, std::size_t n) {
        if (offset > size || n > size - offset) __builtin_trap();  // the reader must stay inside the archive
        return std::string(bytes.substr(offset, n));
      });
      for (const auto& [name, entry] : zip.entries) {
        if (entry.data_offset > size || entry.size > size - entry.data_offset) __builtin_trap();
      }
      if (const auto* program = zip.find("data.pkl")) {
        check(quicksave::format::parse_torch_pickle(bytes.substr(program->data_offset, program->size)));
      }
    } else {
      check(quicksave::format::parse_torch_pickle(bytes));
    }
  } catch (const quicksave::Error& e) {
    if (e.code() != quicksave::ErrorCode::corrupt) __builtin_trap();
  }
  return 0;
}
