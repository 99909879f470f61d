// Opening files a checkpoint names, for reading, without trusting what they are: a FIFO must not
// block the reader in open(), and a device (/dev/zero) must not be read until memory runs out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

namespace quicksave::io {

// Whether the last component of the path may be a symbolic link.
enum class Symlinks {
  follow,  // checkpoint files: a folder of links to the real shards is a normal layout
  refuse,  // the commit protocol's own files (O_NOFOLLOW): following one could read anything
};

// A read-only descriptor on a regular file, closed on destruction.
class RegularFile {
 public:
  // open(O_RDONLY | O_NONBLOCK | O_CLOEXEC) — O_NONBLOCK so that opening a FIFO returns at once —
  // then fstat: anything but a regular file (FIFO, socket, device, directory) is refused with
  // Error(invalid_argument) naming what it is. A missing file is Error(not_found), a refused
  // symbolic link Error(corrupt), other open failures Error(io).
  static RegularFile open(const std::filesystem::path& path, Symlinks symlinks = Symlinks::follow);

  RegularFile(RegularFile&& other) noexcept;
  RegularFile& operator=(RegularFile&& other) noexcept;
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile();

  int fd() const { return fd_; }
  // Gives up ownership: the caller closes the descriptor.
  int release() { return std::exchange(fd_, -1); }
  std::uint64_t size() const { return size_; }  // at open time
  const std::filesystem::path& path() const { return path_; }

  // Exactly `n` bytes at `offset` into `dst`; a file that shrank is Error(corrupt), a failed read
  // Error(io), both naming the file.
  void read_exact(void* dst, std::size_t n, std::uint64_t offset) const;
  std::string read_string(std::uint64_t offset, std::size_t n) const;
  // The whole file, refused (Error(corrupt)) when larger than `max_bytes`, before anything is read.
  std::string read_all(std::uint64_t max_bytes, const std::string& what) const;

 private:
  RegularFile(int fd, std::uint64_t size, std::filesystem::path path) : fd_(fd), size_(size), path_(std::move(path)) {}
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::filesystem::path path_;
};

// "a FIFO", "a directory", "a character device", ... for an st_mode.
const char* file_type_name(unsigned mode);

}  // namespace quicksave::io
