// RegularFile (see regular_file.hpp).
#include "io/regular_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "quicksave/error.hpp"

namespace quicksave::io {

const char* file_type_name(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
  }
}

RegularFile RegularFile::open(const std::filesystem::path& path, Symlinks symlinks) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (symlinks == Symlinks::refuse ? O_NOFOLLOW : 0);
  int fd;
  do {
    fd = ::open(path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw Error(ErrorCode::not_found, "No such file or directory: " + path.string(), err);
    if (err == ELOOP && symlinks == Symlinks::refuse) throw Error(ErrorCode::corrupt, "open: " + path.string() + " is a symbolic link", err);
    throw io_error("open", err, "file=" + path.string());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw io_error("fstat", err, "file=" + path.string());
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::invalid_argument, path.string() + " is " + file_type_name(st.st_mode) + ", not a regular file: refused");
  }
  return RegularFile(fd, static_cast<std::uint64_t>(st.st_size), path);
}

RegularFile::RegularFile(RegularFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), size_(other.size_), path_(std::move(other.path_)) {}

RegularFile& RegularFile::operator=(RegularFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    path_ = std::move(other.path_);
  }
  return *this;
}

RegularFile::~RegularFile() {
  if (fd_ >= 0) ::close(fd_);
}

void RegularFile::read_exact(void* dst, std::size_t n, std::uint64_t offset) const {
  auto* out = static_cast<char*>(dst);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw io_error("pread", errno, "file=" + path_.string() + ", offset=" + std::to_string(offset + done));
    if (got == 0) {
      throw Error(ErrorCode::corrupt, "file shrank while being read (file=" + path_.string() + ", offset=" + std::to_string(offset + done) + ")");
    }
    done += static_cast<std::size_t>(got);
  }
}

std::string RegularFile::read_string(std::uint64_t offset, std::size_t n) const {
  std::string out(n, '\0');
  read_exact(out.data(), n, offset);
  return out;
}

std::string RegularFile::read_all(std::uint64_t max_bytes, const std::string& what) const {
  if (size_ > max_bytes) {
    throw Error(ErrorCode::corrupt, what + " too large: " + std::to_string(size_) + " bytes, the limit is " + std::to_string(max_bytes) +
                                        " (file=" + path_.string() + ")");
  }
  return read_string(0, static_cast<std::size_t>(size_));
}

}  // namespace quicksave::io
