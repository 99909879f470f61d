// Zip central directory reader (see zip_directory.hpp). The sizes a zip declares are data, not
// facts: each is checked against the archive's real size, so a 3 MB file cannot make a reader
// allocate 3 GB, and anything compressed, encrypted or split over disks is refused.
#include "format/zip_directory.hpp"

#include <algorithm>
#include <cstring>

#include "quicksave/error.hpp"

namespace quicksave::format {
namespace {

constexpr std::uint32_t kEndSignature = 0x06054b50;
constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr std::uint32_t kZip64EndSignature = 0x06064b50;
constexpr std::uint32_t kCentralSignature = 0x02014b50;
constexpr std::uint32_t kLocalSignature = 0x04034b50;
constexpr std::size_t kEndBytes = 22, kZip64LocatorBytes = 20, kZip64EndBytes = 56, kCentralBytes = 46, kLocalBytes = 30;

Error bad_zip(const std::string& why) { return Error(ErrorCode::corrupt, "not a valid zip archive: " + why); }

std::uint64_t le(std::string_view s, std::size_t at, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

struct End {
  std::uint64_t entries = 0, cd_size = 0, cd_offset = 0, end_offset = 0;
};

End find_end(std::uint64_t archive_size, const ReadAt& read_at) {
  if (archive_size < kEndBytes) throw bad_zip("the file has " + std::to_string(archive_size) + " bytes, fewer than a zip's end record");
  // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
  const std::uint64_t tail_size = std::min<std::uint64_t>(archive_size, kEndBytes + 0xffff);
  const std::uint64_t tail_start = archive_size - tail_size;
  const std::string tail = read_at(tail_start, tail_size);
  for (std::size_t i = tail.size() - kEndBytes + 1; i-- > 0;) {
    if (le(tail, i, 4) != kEndSignature) continue;
    if (i + kEndBytes + le(tail, i + 20, 2) != tail.size()) continue;  // the comment must end the file
    End end;
    end.end_offset = tail_start + i;
    if (le(tail, i + 4, 2) != 0 || le(tail, i + 6, 2) != 0) throw bad_zip("archives split over several disks are not supported");
    end.entries = le(tail, i + 10, 2);
    end.cd_size = le(tail, i + 12, 4);
    end.cd_offset = le(tail, i + 16, 4);
    // zip64: the real counts are in the zip64 end record the locator (just before) points to.
    if (end.end_offset >= kZip64LocatorBytes) {
      const std::string locator = read_at(end.end_offset - kZip64LocatorBytes, kZip64LocatorBytes);
      if (le(locator, 0, 4) == kZip64LocatorSignature) {
        const std::uint64_t at = le(locator, 8, 8);
        if (at > end.end_offset - kZip64LocatorBytes || end.end_offset - kZip64LocatorBytes - at < kZip64EndBytes) {
          throw bad_zip("the zip64 end record offset " + std::to_string(at) + " is out of range");
        }
        const std::string z = read_at(at, kZip64EndBytes);
        if (le(z, 0, 4) != kZip64EndSignature) throw bad_zip("no zip64 end record at offset " + std::to_string(at));
        end.entries = le(z, 32, 8);
        end.cd_size = le(z, 40, 8);
        end.cd_offset = le(z, 48, 8);
        end.end_offset = at;
      }
    }
    return end;
  }
  throw bad_zip("no end-of-central-directory record");
}

}  // namespace

const ZipEntry* ZipDirectory::find(std::string_view name) const {
  const auto it = entries.find(prefix + std::string(name));
  return it == entries.end() ? nullptr : &it->second;
}

ZipDirectory read_zip_directory(std::uint64_t archive_size, const ReadAt& read_at) {
  const End end = find_end(archive_size, read_at);
  if (end.cd_offset > end.end_offset || end.cd_size > end.end_offset - end.cd_offset) {
    throw bad_zip("the central directory (offset " + std::to_string(end.cd_offset) + ", " + std::to_string(end.cd_size) +
                  " bytes) lies outside the file of " + std::to_string(archive_size) + " bytes");
  }
  if (end.entries > end.cd_size / kCentralBytes) {
    throw bad_zip(std::to_string(end.entries) + " entries cannot fit in a central directory of " + std::to_string(end.cd_size) + " bytes");
  }
  const std::string cd = read_at(end.cd_offset, static_cast<std::size_t>(end.cd_size));
  ZipDirectory dir;
  std::size_t at = 0;
  for (std::uint64_t i = 0; i < end.entries; ++i) {
    if (cd.size() - at < kCentralBytes || le(cd, at, 4) != kCentralSignature) {
      throw bad_zip("central directory entry " + std::to_string(i) + " is truncated or has no signature");
    }
    const auto flags = le(cd, at + 8, 2), method = le(cd, at + 10, 2);
    std::uint64_t csize = le(cd, at + 20, 4), usize = le(cd, at + 24, 4), local = le(cd, at + 42, 4);
    const std::size_t name_len = le(cd, at + 28, 2), extra_len = le(cd, at + 30, 2), comment_len = le(cd, at + 32, 2);
    if (cd.size() - at - kCentralBytes < name_len + extra_len + comment_len) {
      throw bad_zip("central directory entry " + std::to_string(i) + " runs past the directory");
    }
    std::string name = cd.substr(at + kCentralBytes, name_len);
    // zip64 extended information: the 8-byte values of the fields that read 0xffffffff, in order.
    const std::string_view extra(cd.data() + at + kCentralBytes + name_len, extra_len);
    for (std::size_t e = 0; e + 4 <= extra.size();) {
      const auto id = le(extra, e, 2);
      const std::size_t len = le(extra, e + 2, 2);
      if (e + 4 + len > extra.size()) throw bad_zip("entry " + name + " has a truncated extra field");
      if (id == 0x0001) {
        std::size_t f = e + 4;
        for (std::uint64_t* field : {&usize, &csize, &local}) {
          if (*field != 0xffffffff) continue;
          if (f + 8 > e + 4 + len) throw bad_zip("entry " + name + " has a truncated zip64 field");
          *field = le(extra, f, 8);
          f += 8;
        }
      }
      e += 4 + len;
    }
    at += kCentralBytes + name_len + extra_len + comment_len;
    if (flags & 0x1) throw bad_zip("entry " + name + " is encrypted");
    if (method != 0) {
      throw bad_zip("entry " + name + " is compressed (method " + std::to_string(method) +
                    "); torch.save writes stored entries only and only those are read");
    }
    if (csize != usize) {
      throw bad_zip("stored entry " + name + " declares " + std::to_string(usize) + " bytes but holds " + std::to_string(csize));
    }
    if (local > end.cd_offset || end.cd_offset - local < kLocalBytes) {
      throw bad_zip("entry " + name + " has its local header at offset " + std::to_string(local) + ", outside the data area");
    }
    const std::string header = read_at(local, kLocalBytes);
    if (le(header, 0, 4) != kLocalSignature) throw bad_zip("entry " + name + " has no local header at offset " + std::to_string(local));
    const std::uint64_t data = local + kLocalBytes + le(header, 26, 2) + le(header, 28, 2);
    if (data > end.cd_offset || end.cd_offset - data < usize) {
      throw bad_zip("entry " + name + " declares " + std::to_string(usize) + " bytes at offset " + std::to_string(data) +
                    " but the file's data area ends at " + std::to_string(end.cd_offset));
    }
    if (dir.entries.empty()) {
      const auto slash = name.find('/');
      dir.prefix = slash == std::string::npos ? std::string() : name.substr(0, slash + 1);
    }
    ZipEntry entry{name, data, usize};
    if (!dir.entries.emplace(name, std::move(entry)).second) throw bad_zip("entry " + name + " appears twice");
  }
  return dir;
}

}  // namespace quicksave::format
