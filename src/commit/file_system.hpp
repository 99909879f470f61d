// FileSystem: the narrow seam between the commit protocol and the operating system. Everything
// the protocol does to a folder's namespace goes through it (rename, exchange, link, remove,
// list, stat, small durable files, directory sync, locks), so a test can decorate it to fail or
// crash at any single step (FaultFileSystem). The data path, the bytes of the shards, stays on
// io::IoBackend.
//
// Every call that fails throws quicksave::Error naming the call and the paths, e.g.
//   "rename: No space left on device (from=/ckpt/.qs-1f.model.safetensors, to=/ckpt/model.safetensors)".
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quicksave::commit {

namespace fs = std::filesystem;

enum class EntryType { none, file, directory, other };

struct DirEntry {
  std::string name;
  EntryType type = EntryType::other;  // of the entry itself (symlinks are `other`)
};

// An exclusive advisory lock held on a file (an open file description lock: it conflicts with
// every other open of the file, in this process or another, with classic fcntl locks, and over
// NFS). Released when the object is destroyed or release() is called, and by the kernel when the
// process dies, which is what makes "can I take its lock" a liveness test that pid reuse cannot
// fool. The holder removes the lock file as it releases it, so no lock files pile up beside
// checkpoint folders; a taker re-checks after locking that the name still leads to the file it
// locked (else it raced with a release and tries again).
class FileLock {
 public:
  FileLock() = default;
  FileLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  FileLock(FileLock&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) { other.fd_ = -1; }
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() { release(); }

  bool held() const { return fd_ >= 0; }
  // Removes the lock file, then drops the lock.
  void release() noexcept;

 private:
  int fd_ = -1;
  std::filesystem::path path_;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  virtual void rename(const fs::path& from, const fs::path& to) = 0;
  // Atomically swaps two existing paths (renameat2 RENAME_EXCHANGE); ErrorCode::unavailable when
  // the filesystem cannot.
  virtual void exchange(const fs::path& a, const fs::path& b) = 0;
  // A second name for a file (link(2)); ErrorCode::unavailable when the filesystem has no hard links.
  virtual void hard_link(const fs::path& from, const fs::path& to) = 0;
  virtual void remove(const fs::path& path) = 0;          // a file (unlink)
  virtual void remove_all(const fs::path& path) = 0;      // a directory tree (missing: nothing to do)
  virtual void make_directory(const fs::path& path) = 0;  // one level; an existing one is an error
  virtual void make_directories(const fs::path& path) = 0;  // every missing level
  virtual void sync_directory(const fs::path& path) = 0;  // fsync of the directory itself
  // Creates `path` (it must not exist), writes `contents`, fsyncs and closes it.
  virtual void write_file_durably(const fs::path& path, std::string_view contents) = 0;

  // Reads a regular file of at most `max_bytes` (not following a final symlink, never blocking on
  // a FIFO or device); ErrorCode::corrupt for anything else or anything bigger.
  virtual std::string read_small_file(const fs::path& path, std::size_t max_bytes) = 0;
  // The entries of a directory, "." and ".." left out; empty when it does not exist.
  virtual std::vector<DirEntry> list(const fs::path& dir) = 0;
  // The type of `path` itself (lstat); `none` when it does not exist.
  virtual EntryType type_of(const fs::path& path) = 0;
  // The inode number of `path` itself (lstat), 0 when it does not exist. Journals record the
  // inodes of the files they may delete, so a planted journal cannot name a file it did not make.
  virtual std::uint64_t file_id(const fs::path& path) = 0;

  // Takes the exclusive lock on `path` (created if missing; see FileLock). Returns an empty lock
  // when someone else holds it and `wait` is false; with `wait`, blocks until it is free. Once
  // held, `holder` (who we are, for messages) replaces the file's text.
  virtual FileLock lock(const fs::path& path, std::string_view holder, bool wait) = 0;
  // The holder text of the lock on `path` while someone holds it; nullopt when it is free or the
  // file does not exist. Never creates or writes anything (works on a read-only mount).
  virtual std::optional<std::string> lock_holder(const fs::path& path) = 0;
};

std::unique_ptr<FileSystem> make_posix_file_system();

// "host=<hostname> boot=<boot id> pid=<pid>": who this process is, for lock files and journals
// (the pid alone means nothing in another pid namespace or on another host).
std::string process_identity();

}  // namespace quicksave::commit
