// PosixFileSystem: the FileSystem seam over plain system calls (the io module's blocking
// helpers for the calls the write path shares, so each error is spelled once).
#include "commit/file_system.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>

#include "io/posix_ops.hpp"
#include "io/regular_file.hpp"
#include "quicksave/error.hpp"

namespace quicksave::commit {

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

void FileLock::release() noexcept {
  if (fd_ < 0) return;
  // Unlink while still holding it: anyone who opened this inode meanwhile sees, once it gets the
  // lock, that the name now leads elsewhere (or nowhere), and starts again.
  (void)::unlink(path_.c_str());
  ::close(fd_);  // closing the description drops its lock
  fd_ = -1;
}

namespace {

EntryType type_of_mode(mode_t mode) {
  if (S_ISREG(mode)) return EntryType::file;
  if (S_ISDIR(mode)) return EntryType::directory;
  return EntryType::other;
}

class PosixFileSystem final : public FileSystem {
 public:
  void rename(const fs::path& from, const fs::path& to) override { io::detail::rename_path(from, to); }
  void exchange(const fs::path& a, const fs::path& b) override { io::detail::exchange_paths(a, b); }

  void hard_link(const fs::path& from, const fs::path& to) override {
    if (::link(from.c_str(), to.c_str()) == 0) return;
    const int e = errno;
    const std::string context = "from=" + from.string() + ", to=" + to.string();
    if (e == EPERM || e == EXDEV || e == ENOTSUP || e == EOPNOTSUPP || e == EMLINK || e == ENOSYS) {
      throw Error(ErrorCode::unavailable, "link: " + std::string(std::strerror(e)) + " (no hard links here, " + context + ")", e);
    }
    throw io_error("link", e, context);
  }

  void remove(const fs::path& path) override { io::detail::remove_file(path); }
  void remove_all(const fs::path& path) override { io::detail::remove_tree(path); }
  void make_directory(const fs::path& path) override { io::detail::make_directory(path); }

  void make_directories(const fs::path& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw io_error("mkdir", ec.value(), "dir=" + path.string());
  }

  void sync_directory(const fs::path& path) override { io::detail::sync_directory(path); }

  void write_file_durably(const fs::path& path, std::string_view contents) override {
    int fd;
    do {
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) throw io_error("open", errno, "file=" + path.string());
    try {
      io::detail::write_all(fd, path, 0, reinterpret_cast<const std::byte*>(contents.data()), contents.size());
      io::detail::sync_fd(fd, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    io::detail::close_fd(fd, path);
  }

  std::string read_small_file(const fs::path& path, std::size_t max_bytes) override {
    // Never a symbolic link (following one could read anything on the machine), never a FIFO or
    // device: what is not a small regular file is a corrupt protocol file here.
    std::optional<io::RegularFile> file;
    try {
      file.emplace(io::RegularFile::open(path, io::Symlinks::refuse));
    } catch (const Error& e) {
      if (e.code() == ErrorCode::invalid_argument) throw Error(ErrorCode::corrupt, e.what());
      throw;
    }
    return file->read_all(max_bytes, "protocol file");
  }

  std::vector<DirEntry> list(const fs::path& dir) override {
    std::vector<DirEntry> entries;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      if (errno == ENOENT || errno == ENOTDIR) return entries;
      throw io_error("opendir", errno, "dir=" + dir.string());
    }
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      EntryType type = EntryType::other;
      if (e->d_type == DT_REG) type = EntryType::file;
      else if (e->d_type == DT_DIR) type = EntryType::directory;
      else if (e->d_type == DT_UNKNOWN) type = type_of(dir / name);
      entries.push_back(DirEntry{name, type});
    }
    ::closedir(d);
    return entries;
  }

  EntryType type_of(const fs::path& path) override {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return EntryType::none;
      throw io_error("lstat", errno, "file=" + path.string());
    }
    return type_of_mode(st.st_mode);
  }

  std::uint64_t file_id(const fs::path& path) override {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return 0;
      throw io_error("lstat", errno, "file=" + path.string());
    }
    return static_cast<std::uint64_t>(st.st_ino);
  }

  std::optional<std::string> lock_holder(const fs::path& path) override {
    int fd;
    do {
      fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return std::nullopt;  // no lock file: no writer has ever started here
    struct flock probe {};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    const bool locked = ::fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
    std::string holder;
    if (locked) {
      char text[4096];
      const ssize_t n = ::pread(fd, text, sizeof text, 0);
      if (n > 0) holder.assign(text, static_cast<std::size_t>(n));
    }
    ::close(fd);
    if (!locked) return std::nullopt;
    return holder.empty() ? std::string("holder unknown") : holder;
  }

  FileLock lock(const fs::path& path, std::string_view holder, bool wait) override {
    for (;;) {
      int fd;
      do {
        fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
      } while (fd < 0 && errno == EINTR);
      if (fd < 0) throw io_error("open", errno, "lock=" + path.string());
      struct stat st {};
      if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(ErrorCode::corrupt, "lock file " + path.string() + " is not a regular file");
      }
      struct flock request {};
      request.l_type = F_WRLCK;
      request.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
      int rc;
      do {
        rc = ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &request);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0) {
        const int e = errno;
        ::close(fd);
        if (!wait && (e == EAGAIN || e == EACCES)) return FileLock{};
        throw io_error("fcntl(F_OFD_SETLK)", e, "lock=" + path.string());
      }
      // The previous holder may have removed (and someone recreated) the file between our open
      // and our lock: then this lock guards nothing.
      struct stat now {};
      if (::lstat(path.c_str(), &now) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev) {
        ::close(fd);
        continue;
      }
      // Who holds it, for the busy error of the next writer. Only informative: the lock itself is
      // the kernel's, so a torn text here decides nothing.
      if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, holder.data(), holder.size(), 0);
      return FileLock(fd, path);
    }
  }
};

std::string first_line_of(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

std::unique_ptr<FileSystem> make_posix_file_system() { return std::make_unique<PosixFileSystem>(); }

std::string process_identity() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  std::string boot = first_line_of("/proc/sys/kernel/random/boot_id");
  if (boot.empty()) boot = "?";
  return "host=" + std::string(host) + " boot=" + boot + " pid=" + std::to_string(::getpid());
}

}  // namespace quicksave::commit
