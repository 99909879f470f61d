// The blocking POSIX side of the I/O backends, shared by PosixBackend and UringBackend: the table
// of open files behind FileHandle ids, the pwrite loop, and every non-write operation (open,
// fsync, rename, ...). Only the way writes are issued differs between the two backends, so the
// rest lives here once, with one spelling of each error message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "io/backend.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io::detail {

struct OpenFile {
  int fd = -1;
  fs::path path;
  bool direct = false;
};

// FileHandle id -> open file. Ids are never reused, so a stale handle is always detected.
class FileTable {
 public:
  FileTable() = default;
  FileTable(const FileTable&) = delete;
  FileTable& operator=(const FileTable&) = delete;
  // Closes what the caller forgot to close: a leaked descriptor would outlive the backend.
  ~FileTable();

  FileHandle add(int fd, fs::path path, bool direct);
  // nullptr when the handle is not open.
  std::shared_ptr<const OpenFile> find(FileHandle file) const;
  // Throws an EBADF io error naming `call` when the handle is not open.
  std::shared_ptr<const OpenFile> get(FileHandle file, const char* call) const;
  // Removes the entry (the caller closes the descriptor); throws like get().
  std::shared_ptr<const OpenFile> take(FileHandle file, const char* call);

 private:
  mutable std::mutex mutex_;
  int next_id_ = 0;
  std::unordered_map<int, std::shared_ptr<const OpenFile>> files_;
};

// "file=<path>, offset=<offset>, bytes=<bytes>": the context of every data error message.
std::string data_context(const fs::path& path, std::uint64_t offset, std::uint64_t bytes);
// The error of an operation on a handle that is not open: "<call>: Bad file descriptor (handle=N is not open)".
Error closed_handle_error(const char* call, FileHandle file);

// open(O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC[|O_DIRECT], 0644) and fallocate. Throws
// ErrorCode::unavailable when the filesystem refuses O_DIRECT.
int open_for_write(const fs::path& path, const OpenOptions& options);
// pwrite until every byte is written, continuing short writes and EINTR. An error carries the
// whole request's offset and length (and how much was written before it). Returns how many short
// writes it continued.
std::uint64_t write_all(int fd, const fs::path& path, std::uint64_t offset, const std::byte* buffer,
                        std::size_t length);
// open(O_RDONLY|O_CLOEXEC[|O_DIRECT]) of a regular file only (io::RegularFile's checks); throws
// ErrorCode::unavailable when the filesystem refuses O_DIRECT.
int open_for_read(const fs::path& path, bool direct);
// pread until every byte is read, continuing short reads and EINTR. End of file first is
// Error(corrupt) "file ended ..." with the request's context. Returns how many short reads it continued.
std::uint64_t read_all(int fd, const fs::path& path, std::uint64_t offset, std::byte* buffer, std::size_t length);
// The error of a read that reached the end of the file after `done` of `length` bytes.
Error unexpected_end_of_file(const fs::path& path, std::uint64_t offset, std::uint64_t length, std::uint64_t done);
void sync_fd(int fd, const fs::path& path);
void truncate_fd(int fd, const fs::path& path, std::uint64_t size);
void start_writeback_fd(int fd, std::uint64_t offset, std::uint64_t length);
void close_fd(int fd, const fs::path& path);

void rename_path(const fs::path& from, const fs::path& to);
void exchange_paths(const fs::path& a, const fs::path& b);
void remove_file(const fs::path& path);
void remove_tree(const fs::path& path);
void make_directory(const fs::path& path);
void sync_directory(const fs::path& path);

// An IoBackend whose file and namespace operations are the blocking calls above; a subclass
// supplies only the data path (write, read, drain, register_buffers, stats).
class BlockingBackend : public IoBackend {
 public:
  FileHandle create(const fs::path& path, const OpenOptions& options) override;
  FileHandle open_read(const fs::path& path, bool direct) override;
  void start_writeback(FileHandle file, std::uint64_t offset, std::uint64_t length) override;
  void sync(FileHandle file) override;
  void truncate(FileHandle file, std::uint64_t size) override;
  void close(FileHandle file) override;


 protected:
  FileTable files_;
};

}  // namespace quicksave::io::detail
