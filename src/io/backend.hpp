// IoBackend: how quicksave moves the bytes of a checkpoint's files (the data path): writes for
// saves, reads for loads. Both are asynchronous (submit, then a completion callback on the
// backend's own thread); create, open_read, sync, truncate and close are plain blocking calls
// made from a worker thread. Every operation that
// can fail reports an Error whose message names the call, the file and the bytes, e.g.
//   "pwrite: No space left on device (file=/ckpt/model-00002-of-00004.safetensors, offset=8388608, bytes=8388608)".
//
// Backends: PosixBackend (pwrite on a thread pool), UringBackend (liburing, registered buffers,
// queue depth), and FaultBackend, a decorator that injects failures for tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "quicksave/checkpointer.hpp"

namespace quicksave::io {

namespace fs = std::filesystem;

// The outcome of one asynchronous operation: nullptr on success, else the error (a quicksave::Error).
using Completion = std::function<void(std::exception_ptr error)>;

struct OpenOptions {
  bool direct = false;            // O_DIRECT: buffers, offsets and lengths must be aligned
  std::uint64_t preallocate = 0;  // fallocate this many bytes first (ext4 serialises extending O_DIRECT writes)
  bool truncate = true;           // false: keep what the file holds (several writers fill one file)
};

// An open file's id in the backend that opened it. Callers hold it in a ScopedFile (below),
// which closes it exactly once.
struct FileHandle {
  int id = -1;
  explicit operator bool() const { return id >= 0; }
};

class IoBackend;

// Owns an open file of a backend: move-only, closed when destroyed (errors then ignored: the
// path of a failed save) or by close(), which reports them (the path of a good one).
class ScopedFile {
 public:
  ScopedFile() = default;
  ScopedFile(IoBackend& io, FileHandle handle) : io_(&io), handle_(handle) {}
  ScopedFile(ScopedFile&& other) noexcept : io_(other.io_), handle_(std::exchange(other.handle_, FileHandle{})) {}
  ScopedFile& operator=(ScopedFile&& other) noexcept {
    if (this != &other) {
      reset();
      io_ = other.io_;
      handle_ = std::exchange(other.handle_, FileHandle{});
    }
    return *this;
  }
  ScopedFile(const ScopedFile&) = delete;
  ScopedFile& operator=(const ScopedFile&) = delete;
  ~ScopedFile() { reset(); }

  FileHandle get() const { return handle_; }
  explicit operator bool() const { return static_cast<bool>(handle_); }
  // Closes now; throws what the backend's close() throws (the handle is released either way).
  void close();

 private:
  void reset() noexcept;
  IoBackend* io_ = nullptr;
  FileHandle handle_;
};

// What a backend has done so far, for tests and benchmarks (a snapshot; counters only grow,
// except registered_regions, which is what is registered now).
struct BackendStats {
  std::uint64_t writes = 0;                     // write() calls completed, successfully or not
  std::uint64_t bytes_written = 0;              // bytes of the writes that succeeded
  std::uint64_t failed_writes = 0;              // writes whose completion carried an error
  std::uint64_t short_write_continuations = 0;  // times a short write had to be continued
  std::uint64_t registered_buffer_writes = 0;   // writes served from a registered buffer (write_fixed)
  std::uint64_t registered_regions = 0;         // buffer regions the kernel holds registered now
  std::uint64_t reads = 0;                      // read() calls completed, successfully or not
  std::uint64_t bytes_read = 0;                 // bytes of the reads that succeeded
  std::uint64_t failed_reads = 0;               // reads whose completion carried an error
  std::uint64_t registered_buffer_reads = 0;    // reads into a registered buffer (read_fixed)
};

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  // "posix", "io_uring", or "fault(<inner>)".
  virtual std::string name() const = 0;
  // O_DIRECT's alignment for offsets, lengths and buffer addresses (bytes).
  virtual std::size_t direct_alignment() const { return 4096; }

  // Pins memory that write() buffers will come from (io_uring registers it; others ignore it).
  // Call before any write; buffers outside registered regions still work, just slower.
  // A registration the kernel refuses (e.g. RLIMIT_MEMLOCK) is not an error: writes then use
  // plain buffers, and stats().registered_regions says 0. Waits for queued writes first.
  virtual void register_buffers(std::span<const std::span<std::byte>> regions) {}

  // Creates (truncating) a file for writing.
  virtual FileHandle create(const fs::path& path, const OpenOptions& options) = 0;
  // create(), owned: the file is closed when the result goes.
  ScopedFile create_scoped(const fs::path& path, const OpenOptions& options) { return ScopedFile(*this, create(path, options)); }
  // Queues a write of `length` bytes from `buffer` at `offset`. `buffer` must stay valid until
  // `done` runs. Short writes are continued internally; `done` sees the whole write or an error.
  // `done` must not throw, and may itself call write() (never drain(): that would wait for itself).
  virtual void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
                     Completion done) = 0;
  // Opens an existing file for reading, with io::RegularFile's checks (a FIFO, socket, device or
  // directory is refused before anything blocks). `direct`: O_DIRECT; a filesystem that refuses
  // it fails with ErrorCode::unavailable, so the caller can fall back to buffered reads.
  virtual FileHandle open_read(const fs::path& path, bool direct) = 0;
  ScopedFile open_read_scoped(const fs::path& path, bool direct) { return ScopedFile(*this, open_read(path, direct)); }
  // Queues a read of `length` bytes at `offset` into `buffer`, which must stay valid until `done`
  // runs. Short reads are continued internally; a file that ends before `length` bytes completes
  // with Error(corrupt) naming the file and where it ended. The same rules for `done` as write().
  virtual void read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) = 0;
  // Blocks until every write and read queued so far on this backend has completed (callbacks have run).
  // Called from a completion callback it throws ErrorCode::failed_precondition.
  virtual void drain() = 0;
  // Starts write-back of a written range without waiting (sync_file_range); a hint, never fails.
  virtual void start_writeback(FileHandle file, std::uint64_t offset, std::uint64_t length) {}
  // fdatasync/fsync of a file (blocking). A failure ends the save: no retry.
  virtual void sync(FileHandle file) = 0;
  // Shrinks or grows the file to `size` bytes (after preallocation beyond the data).
  virtual void truncate(FileHandle file, std::uint64_t size) = 0;
  virtual void close(FileHandle file) = 0;

  // Namespace operations (rename, link, directory sync, ...) are not here: the commit protocol
  // makes them through commit::FileSystem, its own seam.

  virtual BackendStats stats() const { return {}; }
};

// Writes `length` bytes and waits for them (pieces of at most 64 MiB): for writers that have
// nothing else to do meanwhile (the synchronous writer, the pickle writer).
void write_blocking(IoBackend& io, FileHandle file, std::uint64_t offset, const std::byte* data, std::size_t length);

enum class BackendKind { automatic, io_uring, posix };
// The public choice (CheckpointerOptions, LoaderOptions) as a kind.
BackendKind backend_kind(IoBackendChoice choice);

struct BackendOptions {
  BackendKind kind = BackendKind::automatic;
  unsigned queue_depth = 16;      // io_uring: submission queue depth, the most writes in flight
  unsigned posix_threads = 4;     // posix: writer threads
};

// Makes the requested backend. `automatic` (and io_uring when the ring cannot be created, e.g.
// EPERM/ENOSYS under Docker's seccomp profile) falls back to posix; `fallback_reason` then says
// why. io_uring requested explicitly but unavailable also falls back, with the reason set.
std::unique_ptr<IoBackend> make_backend(const BackendOptions& options, std::string* fallback_reason = nullptr);

std::unique_ptr<IoBackend> make_posix_backend(unsigned threads);
// Throws ErrorCode::unavailable when io_uring cannot be used here (or was built without it).
std::unique_ptr<IoBackend> make_uring_backend(unsigned queue_depth);

}  // namespace quicksave::io
