// verify_checksums (quicksave/verify.hpp): re-hashes, range by range, what the manifest says each
// file holds. One pread per range (a range is at most one staging chunk), so memory stays bounded.
#include "quicksave/verify.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "commit/names.hpp"
#include "commit/recovery.hpp"
#include "format/checksum.hpp"
#include "format/manifest.hpp"
#include "read/manifest_check.hpp"
#include "quicksave/error.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;

// An open regular file (never a FIFO or device: O_NONBLOCK + fstat), closed on scope exit.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const fs::path& path) : path_(path) {
    do {
      fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw io_error("open", errno, "file=" + path.string());
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw Error(ErrorCode::corrupt, path.string() + " is not a regular file");
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~ReadOnlyFile() { ::close(fd_); }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  std::uint64_t size() const { return size_; }
  // Bytes [begin, end), which the caller has checked lie inside the file.
  void read(std::uint64_t begin, std::uint64_t end, std::vector<std::byte>& out) const {
    out.resize(end - begin);
    std::size_t got = 0;
    while (got < out.size()) {
      const ssize_t n = ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(begin + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw io_error("pread", errno, "file=" + path_.string() + ", offset=" + std::to_string(begin + got));
      if (n == 0) throw Error(ErrorCode::corrupt, path_.string() + " ended while being read");
      got += static_cast<std::size_t>(n);
    }
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

std::string range_text(std::uint64_t begin, std::uint64_t end) {
  return "bytes [" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

void check_file(const commit::CheckpointView& view, const format::ManifestFile& entry, ChecksumReport& report) {
  const auto mismatch = [&](std::string tensor, std::uint64_t begin, std::uint64_t end, std::string what) {
    report.mismatches.push_back(ChecksumMismatch{entry.file, std::move(tensor), begin, end, entry.file + ": " + what});
  };
  if (!commit::is_plain_file_name(entry.file)) {
    mismatch("", 0, 0, "the manifest names a file outside the folder");
    return;
  }
  std::unique_ptr<ReadOnlyFile> file;
  try {
    file = std::make_unique<ReadOnlyFile>(view.path_of(entry.file));
  } catch (const Error& e) {
    mismatch("", 0, 0, std::string("cannot be read: ") + e.what());
    return;
  }
  ++report.files_checked;
  if (file->size() != entry.bytes) {
    mismatch("", 0, file->size(), "holds " + std::to_string(file->size()) + " bytes, the manifest says " + std::to_string(entry.bytes));
    return;
  }
  std::vector<std::byte> bytes;
  // The header: its length is the file's first 8 bytes (little-endian).
  if (file->size() >= 8) {
    file->read(0, 8, bytes);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    if (n > file->size() - 8) {
      mismatch("", 0, 8, "its header length does not match the manifest");
      return;
    }
    file->read(0, 8 + n, bytes);
    report.bytes_checked += bytes.size();
    if (format::xxh3_64(bytes.data(), bytes.size()) != entry.header_hash) {
      mismatch("", 0, 8 + n, "its header (" + range_text(0, 8 + n) + ") does not match the manifest");
      return;
    }
    // The header is the one hashed at save time; the manifest's own names and ranges must then
    // describe exactly its tensors (a damaged manifest must not pass by naming the wrong bytes).
    try {
      read::check_manifest_tiles_header(entry, decode_header(bytes, file->size()));
    } catch (const Error& e) {
      mismatch("", 0, 8 + n, std::string("the manifest does not describe its header: ") + e.what());
      return;
    }
  }
  for (const auto& tensor : entry.tensors) {
    ++report.tensors_checked;
    for (const auto& range : tensor.ranges) {
      file->read(range.begin, range.end, bytes);
      report.bytes_checked += bytes.size();
      if (format::xxh3_64(bytes.data(), bytes.size()) != range.hash) {
        mismatch(tensor.name, range.begin, range.end,
                 "tensor " + tensor.name + " " + range_text(range.begin, range.end) + " do not match the manifest");
      }
    }
  }
}

}  // namespace

ChecksumReport verify_checksums(const fs::path& directory, const std::string& pattern) {
  if (!fs::is_directory(directory)) throw Error(ErrorCode::not_found, "no checkpoint folder at " + directory.string());
  auto file_system = commit::make_posix_file_system();
  const commit::CheckpointView view = commit::read_view(*file_system, directory);
  ChecksumReport report;
  report.manifest = commit::manifest_name(pattern);
  if (!view.visible(report.manifest) || file_system->type_of(view.path_of(report.manifest)) == commit::EntryType::none) return report;
  report.manifest_found = true;
  format::Manifest manifest;
  try {
    manifest = format::parse_manifest_json(file_system->read_small_file(view.path_of(report.manifest), format::kMaxManifestBytes));
  } catch (const Error& e) {
    report.mismatches.push_back(ChecksumMismatch{report.manifest, "", 0, 0, report.manifest + ": " + e.what()});
    return report;
  }
  if (manifest.index_file) {
    std::string text;
    try {
      if (!commit::is_plain_file_name(*manifest.index_file)) throw Error(ErrorCode::corrupt, "a name outside the folder");
      text = file_system->read_small_file(view.path_of(*manifest.index_file), format::kMaxManifestBytes);
    } catch (const Error& e) {
      report.mismatches.push_back(ChecksumMismatch{*manifest.index_file, "", 0, 0, *manifest.index_file + ": cannot be read: " + e.what()});
    }
    if (report.mismatches.empty()) {
      ++report.files_checked;
      report.bytes_checked += text.size();
      if (format::xxh3_64(text) != manifest.index_hash) {
        report.mismatches.push_back(ChecksumMismatch{*manifest.index_file, "", 0, text.size(),
                                                     *manifest.index_file + ": does not match the manifest"});
      }
    }
  }
  for (const auto& file : manifest.files) check_file(view, file, report);
  return report;
}

}  // namespace quicksave
