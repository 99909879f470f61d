// FaultBackend: an IoBackend decorator that makes the Nth operation of a kind fail, slow down, or
// end the process (a crash at that exact point), for the fault-matrix and crash tests. The same
// FaultPlan can drive commit::FaultFileSystem too, so "the Nth operation" counts across both
// seams (the data path here, the namespace operations there).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "io/backend.hpp"

namespace quicksave::io {

// Operations of the data seam (create, write, sync, truncate, close, open_read, read) and of the
// file-system seam (rename ... lock); `any` selects the Nth operation of either, whatever it is.
enum class FaultOp {
  create, write, sync, rename, exchange, remove, make_directory, sync_directory, write_file, hard_link,
  truncate, close, remove_all, lock, open_read, read, any
};
enum class FaultKind {
  eio,          // the call fails with EIO
  enospc,       // the call fails with ENOSPC
  short_write,  // write() or read() transfers only part of the bytes once (the backend must continue it)
  latency,      // the call sleeps `latency` first, then succeeds
  crash,        // the process ends at once (_exit(kInjectedCrashExitCode)) before the call is made
};
inline constexpr int kInjectedCrashExitCode = 86;

struct FaultSpec {
  FaultOp op = FaultOp::write;
  FaultKind kind = FaultKind::eio;
  int nth = 1;         // 1-based: the nth call of `op` fails; 0 = every call
  std::chrono::milliseconds latency{0};
};

// The counters and the decision: which call misbehaves. Shared by the decorators of one test.
class FaultPlan {
 public:
  explicit FaultPlan(FaultSpec spec);
  const FaultSpec& spec() const { return spec_; }
  // Counts a call of `op`; returns true when this call must misbehave (sleeping for latency, or
  // never returning for crash). Sets fired() except for short_write, which the write path marks
  // once it has really split a write.
  bool should_fail(FaultOp op);
  int calls(FaultOp op) const { return counts_[static_cast<std::size_t>(op)].load(); }
  bool fired() const { return fired_.load(); }
  void mark_fired() { fired_ = true; }
  // True when the spec makes a selected call fail (eio, enospc) rather than slow or short.
  bool injects_error() const { return spec_.kind == FaultKind::eio || spec_.kind == FaultKind::enospc; }
  // Throws the injected error: "<call>: <strerror> (injected, <context>)".
  [[noreturn]] void fail(const char* call, const std::string& context) const;

 private:
  FaultSpec spec_;
  std::atomic<int> counts_[static_cast<std::size_t>(FaultOp::any) + 1] = {};
  std::atomic<bool> fired_{false};
};

class FaultBackend : public IoBackend {
 public:
  FaultBackend(std::unique_ptr<IoBackend> inner, FaultSpec spec);
  FaultBackend(std::unique_ptr<IoBackend> inner, std::shared_ptr<FaultPlan> plan);
  // How many calls of `op` have been made so far.
  int calls(FaultOp op) const { return plan_->calls(op); }
  // True once the fault has been injected.
  bool fired() const { return plan_->fired(); }
  const std::shared_ptr<FaultPlan>& plan() const { return plan_; }

  std::string name() const override;
  std::size_t direct_alignment() const override { return inner_->direct_alignment(); }
  void register_buffers(std::span<const std::span<std::byte>> regions) override { inner_->register_buffers(regions); }
  FileHandle create(const fs::path& path, const OpenOptions& options) override;
  void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length, Completion done) override;
  FileHandle open_read(const fs::path& path, bool direct) override;
  void read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) override;
  void drain() override { inner_->drain(); }
  void start_writeback(FileHandle file, std::uint64_t offset, std::uint64_t length) override {
    inner_->start_writeback(file, offset, length);
  }
  void sync(FileHandle file) override;
  void truncate(FileHandle file, std::uint64_t size) override;
  void close(FileHandle file) override;
  BackendStats stats() const override { return inner_->stats(); }

 private:
  struct OpenedFile {
    fs::path path;
    bool direct = false;
  };

  OpenedFile opened(FileHandle file) const;
  template <class Byte, class Transfer>
  void transfer_with_faults(FaultOp op, const char* uring_call, const char* posix_call, FileHandle file, std::uint64_t offset,
                            Byte* buffer, std::size_t length, Completion done, Transfer transfer);

  std::unique_ptr<IoBackend> inner_;
  std::shared_ptr<FaultPlan> plan_;
  // Files created through this decorator: their paths name them in injected errors, and a short
  // write on an O_DIRECT one is split at an aligned boundary, as the kernel would, or the
  // continuation would be refused with EINVAL.
  mutable std::mutex files_mutex_;
  std::unordered_map<int, OpenedFile> files_;
};

}  // namespace quicksave::io
