// check_manifest_tiles_header (see manifest_check.hpp).
#include "read/manifest_check.hpp"

#include "quicksave/error.hpp"

namespace quicksave::read {

void check_manifest_tiles_header(const format::ManifestFile& entry, const Header& header) {
  if (header.tensors.size() != entry.tensors.size()) throw Error(ErrorCode::corrupt, "a different number of tensors");
  const std::uint64_t data_start = header.data_start();
  for (std::size_t t = 0; t < header.tensors.size(); ++t) {
    const TensorEntry& expected = header.tensors[t];
    const auto& listed = entry.tensors[t];
    std::uint64_t at = data_start + expected.begin;
    for (const auto& range : listed.ranges) {
      if (range.begin != at) throw Error(ErrorCode::corrupt, "ranges that do not tile tensor " + expected.name);
      at = range.end;
    }
    if (listed.name != expected.name || at != data_start + expected.end) {
      throw Error(ErrorCode::corrupt, "tensor " + listed.name + " where the header has " + expected.name);
    }
  }
}

}  // namespace quicksave::read
