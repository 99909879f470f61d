// The central directory of a zip archive (the container torch.save writes), read without trusting
// it: every size and offset is checked against the archive's real size before anyone allocates.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace quicksave::format {

struct ZipEntry {
  std::string name;
  std::uint64_t data_offset = 0;  // where the entry's bytes start in the archive
  std::uint64_t size = 0;         // bytes of the entry (stored: compressed == uncompressed)
};

struct ZipDirectory {
  std::map<std::string, ZipEntry, std::less<>> entries;
  std::string prefix;  // torch.save's top folder ("archive/"), taken from the first entry

  // The entry `prefix + name`, or nullptr.
  const ZipEntry* find(std::string_view name) const;
};

// Reads `n` bytes at `offset` of the archive (offset + n <= archive_size is guaranteed).
using ReadAt = std::function<std::string(std::uint64_t offset, std::size_t n)>;

// Parses the end-of-central-directory record (zip64 too), every central entry and its local
// header. Only stored (uncompressed, unencrypted) entries are accepted: torch.save writes
// nothing else, and a stored entry's size is bounded by the archive's size. Throws
// Error(corrupt) saying what is wrong; the caller adds the file's name.
ZipDirectory read_zip_directory(std::uint64_t archive_size, const ReadAt& read_at);

}  // namespace quicksave::format
