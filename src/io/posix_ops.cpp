// The blocking POSIX calls shared by the posix and io_uring backends. Each wraps one system call,
// retries EINTR where the call can be safely repeated, and turns a failure into an Error whose
// message names the call and the file (DESIGN.md §5).
#include "io/posix_ops.hpp"
#include "io/regular_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

namespace quicksave::io::detail {

namespace {

std::string file_context(const fs::path& path) { return "file=" + path.string(); }
std::string dir_context(const fs::path& path) { return "dir=" + path.string(); }

}  // namespace

FileTable::~FileTable() {
  for (auto& [id, file] : files_) ::close(file->fd);
}

FileHandle FileTable::add(int fd, fs::path path, bool direct) {
  std::lock_guard lock(mutex_);
  if (next_id_ == INT_MAX) throw Error(ErrorCode::resource_exhausted, "open: out of file handle ids");
  const int id = next_id_++;
  files_.emplace(id, std::make_shared<const OpenFile>(OpenFile{fd, std::move(path), direct}));
  return FileHandle{id};
}

std::shared_ptr<const OpenFile> FileTable::find(FileHandle file) const {
  std::lock_guard lock(mutex_);
  auto it = files_.find(file.id);
  return it == files_.end() ? nullptr : it->second;
}

std::shared_ptr<const OpenFile> FileTable::get(FileHandle file, const char* call) const {
  auto found = find(file);
  if (!found) throw closed_handle_error(call, file);
  return found;
}

std::shared_ptr<const OpenFile> FileTable::take(FileHandle file, const char* call) {
  std::lock_guard lock(mutex_);
  auto it = files_.find(file.id);
  if (it == files_.end()) throw closed_handle_error(call, file);
  auto taken = std::move(it->second);
  files_.erase(it);
  return taken;
}

std::string data_context(const fs::path& path, std::uint64_t offset, std::uint64_t bytes) {
  return "file=" + path.string() + ", offset=" + std::to_string(offset) + ", bytes=" + std::to_string(bytes);
}

Error closed_handle_error(const char* call, FileHandle file) {
  return io_error(call, EBADF, "handle=" + std::to_string(file.id) + " is not open");
}

int open_for_write(const fs::path& path, const OpenOptions& options) {
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (options.truncate ? O_TRUNC : 0);
  if (options.direct) flags |= O_DIRECT;
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int e = errno;
    // Filesystems without O_DIRECT (tmpfs before 6.6, some FUSE mounts) refuse it at open with
    // EINVAL; the caller can then retry buffered, which it cannot tell from a real EINVAL otherwise.
    if (options.direct && e == EINVAL) {
      throw Error(ErrorCode::unavailable,
                  "open: " + std::string(std::strerror(e)) + " (O_DIRECT refused by the filesystem, " +
                      file_context(path) + ")",
                  e);
    }
    throw io_error("open", e, file_context(path));
  }
  if (options.preallocate > 0) {
    int rc;
    do {
      rc = ::fallocate(fd, 0, 0, static_cast<off_t>(options.preallocate));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0 && errno != EOPNOTSUPP) {
      const int e = errno;
      ::close(fd);
      throw io_error("fallocate", e, file_context(path) + ", bytes=" + std::to_string(options.preallocate));
    }
  }
  return fd;
}

std::uint64_t write_all(int fd, const fs::path& path, std::uint64_t offset, const std::byte* buffer,
                        std::size_t length) {
  std::uint64_t continued = 0;
  std::size_t written = 0;
  auto context = [&] {
    std::string text = data_context(path, offset, length);
    if (written > 0) text += ", written=" + std::to_string(written);
    return text;
  };
  while (written < length) {
    const ssize_t n = ::pwrite(fd, buffer + written, length - written, static_cast<off_t>(offset + written));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      throw io_error("pwrite", e, context());
    }
    // A regular file never accepts zero bytes of a non-empty write; looping would spin forever.
    if (n == 0) throw io_error("pwrite", EIO, context() + ", wrote 0 bytes");
    written += static_cast<std::size_t>(n);
    if (written < length) ++continued;
  }
  return continued;
}

int open_for_read(const fs::path& path, bool direct) {
  // RegularFile's open (O_NONBLOCK, then fstat: never blocks on a FIFO, never reads a device),
  // then the descriptor's flags made what reads need: blocking, and O_DIRECT when asked.
  RegularFile file = RegularFile::open(path);
  const int fd = file.release();
  if (::fcntl(fd, F_SETFL, direct ? O_DIRECT : 0) != 0) {
    const int e = errno;
    ::close(fd);
    if (direct && e == EINVAL) {
      throw Error(ErrorCode::unavailable,
                  "fcntl: " + std::string(std::strerror(e)) + " (O_DIRECT refused by the filesystem, " + file_context(path) + ")", e);
    }
    throw io_error("fcntl", e, file_context(path));
  }
  return fd;
}

Error unexpected_end_of_file(const fs::path& path, std::uint64_t offset, std::uint64_t length, std::uint64_t done) {
  return Error(ErrorCode::corrupt, "file ended at offset " + std::to_string(offset + done) + " before the bytes its header names (truncated? " +
                                       data_context(path, offset, length) + ")");
}

std::uint64_t read_all(int fd, const fs::path& path, std::uint64_t offset, std::byte* buffer, std::size_t length) {
  std::uint64_t continued = 0;
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, buffer + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      std::string context = data_context(path, offset, length);
      if (done > 0) context += ", read=" + std::to_string(done);
      throw io_error("pread", e, context);
    }
    if (n == 0) throw unexpected_end_of_file(path, offset, length, done);
    done += static_cast<std::size_t>(n);
    if (done < length) ++continued;
  }
  return continued;
}

void sync_fd(int fd, const fs::path& path) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) throw io_error("fsync", errno, file_context(path));
}

void truncate_fd(int fd, const fs::path& path, std::uint64_t size) {
  int rc;
  do {
    rc = ::ftruncate(fd, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) throw io_error("ftruncate", errno, file_context(path) + ", size=" + std::to_string(size));
}

void start_writeback_fd(int fd, std::uint64_t offset, std::uint64_t length) {
  // Only a hint to start write-back early so the final fsync has less to do; if the filesystem
  // cannot, the fsync still does all the work, so the result is deliberately ignored.
  (void)::sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
}

void close_fd(int fd, const fs::path& path) {
  // Linux releases the descriptor even when close fails (EINTR included): never retry, which
  // could close a descriptor another thread has just been given.
  if (::close(fd) != 0 && errno != EINTR) throw io_error("close", errno, file_context(path));
}

void rename_path(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw io_error("rename", errno, "from=" + from.string() + ", to=" + to.string());
  }
}

void exchange_paths(const fs::path& a, const fs::path& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) != 0) {
    const int e = errno;
    const std::string context = "a=" + a.string() + ", b=" + b.string();
    if (e == EINVAL || e == ENOSYS || e == ENOTSUP) {
      throw Error(ErrorCode::unavailable,
                  "renameat2: " + std::string(std::strerror(e)) + " (RENAME_EXCHANGE not supported here, " +
                      context + ")",
                  e);
    }
    throw io_error("renameat2", e, context);
  }
}

void remove_file(const fs::path& path) {
  if (::unlink(path.c_str()) != 0) throw io_error("unlink", errno, file_context(path));
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) throw io_error("remove_all", ec.value(), dir_context(path));
}

void make_directory(const fs::path& path) {
  if (::mkdir(path.c_str(), 0755) != 0) throw io_error("mkdir", errno, dir_context(path));
}

void sync_directory(const fs::path& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw io_error("open", errno, dir_context(path));
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  const int e = errno;
  ::close(fd);
  if (rc != 0) throw io_error("fsync", e, dir_context(path));
}

FileHandle BlockingBackend::create(const fs::path& path, const OpenOptions& options) {
  const int fd = open_for_write(path, options);
  try {
    return files_.add(fd, path, options.direct);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

FileHandle BlockingBackend::open_read(const fs::path& path, bool direct) {
  const int fd = open_for_read(path, direct);
  try {
    return files_.add(fd, path, direct);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

void BlockingBackend::start_writeback(FileHandle file, std::uint64_t offset, std::uint64_t length) {
  if (auto open = files_.find(file)) start_writeback_fd(open->fd, offset, length);
}

void BlockingBackend::sync(FileHandle file) {
  auto open = files_.get(file, "fsync");
  sync_fd(open->fd, open->path);
}

void BlockingBackend::truncate(FileHandle file, std::uint64_t size) {
  auto open = files_.get(file, "ftruncate");
  truncate_fd(open->fd, open->path, size);
}

void BlockingBackend::close(FileHandle file) {
  auto open = files_.take(file, "close");
  close_fd(open->fd, open->path);
}

}  // namespace quicksave::io::detail
