// FaultBackend: an IoBackend decorator that makes the Nth operation of a kind fail (or slows
// operations down), for the fault-matrix and crash tests.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "io/backend.hpp"

namespace quicksave::io {

enum class FaultOp { create, write, sync, rename, exchange, remove, make_directory, sync_directory, write_file, hard_link };
enum class FaultKind {
  eio,          // the call fails with EIO
  enospc,       // the call fails with ENOSPC
  short_write,  // write() transfers only part of the bytes once (the backend must continue it)
  latency,      // the call sleeps `latency` first, then succeeds
};

struct FaultSpec {
  FaultOp op = FaultOp::write;
  FaultKind kind = FaultKind::eio;
  int nth = 1;         // 1-based: the nth call of `op` fails; 0 = every call
  std::chrono::milliseconds latency{0};
};

class FaultBackend : public IoBackend {
 public:
  FaultBackend(std::unique_ptr<IoBackend> inner, FaultSpec spec);
  // How many calls of `op` have been made so far.
  int calls(FaultOp op) const;
  // True once the fault has been injected.
  bool fired() const { return fired_.load(); }

  std::string name() const override;
  std::size_t direct_alignment() const override { return inner_->direct_alignment(); }
  void register_buffers(std::span<const std::span<std::byte>> regions) override { inner_->register_buffers(regions); }
  FileHandle create(const fs::path& path, const OpenOptions& options) override;
  void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length, Completion done) override;
  void drain() override { inner_->drain(); }
  void start_writeback(FileHandle file, std::uint64_t offset, std::uint64_t length) override {
    inner_->start_writeback(file, offset, length);
  }
  void sync(FileHandle file) override;
  void truncate(FileHandle file, std::uint64_t size) override { inner_->truncate(file, size); }
  void close(FileHandle file) override;
  void rename(const fs::path& from, const fs::path& to) override;
  void exchange(const fs::path& a, const fs::path& b) override;
  void hard_link(const fs::path& from, const fs::path& to) override;
  void remove(const fs::path& path) override;
  void remove_all(const fs::path& path) override { inner_->remove_all(path); }
  void make_directory(const fs::path& path) override;
  void sync_directory(const fs::path& path) override;
  void write_file_durably(const fs::path& path, std::string_view contents) override;
  BackendStats stats() const override { return inner_->stats(); }

 private:
  struct OpenedFile {
    fs::path path;
    bool direct = false;
  };

  // Counts a call of `op`; returns true when this call must misbehave (and sleeps for latency).
  // Sets fired() except for short_write, which write() marks once it has really split a write.
  bool should_fail(FaultOp op);
  // True when the spec makes a selected call fail (eio, enospc) rather than slow or short.
  bool injects_error() const { return spec_.kind == FaultKind::eio || spec_.kind == FaultKind::enospc; }
  // Throws the injected error: "<call>: <strerror> (injected, <context>)".
  [[noreturn]] void fail(const char* call, const std::string& context) const;
  OpenedFile opened(FileHandle file) const;

  std::unique_ptr<IoBackend> inner_;
  FaultSpec spec_;
  std::atomic<int> counts_[10] = {};
  std::atomic<bool> fired_{false};
  // Files created through this decorator: their paths name them in injected errors, and a short
  // write on an O_DIRECT one is split at an aligned boundary, as the kernel would, or the
  // continuation would be refused with EINVAL.
  mutable std::mutex files_mutex_;
  std::unordered_map<int, OpenedFile> files_;
};

}  // namespace quicksave::io
