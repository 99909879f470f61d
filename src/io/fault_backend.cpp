// FaultBackend: injects EIO, ENOSPC, short writes and latency into the Nth call of one operation,
// for the fault-matrix and crash tests. Injected failures look like real ones (same call names,
// errno and message shape, plus "injected") and travel the same way: a failed write completes on
// the inner backend's completion thread and is counted by drain(), so code under test cannot
// tell them from the kernel's.
#include "io/fault_backend.hpp"

#include <unistd.h>

#include <cerrno>
#include <thread>
#include <utility>

#include "io/posix_ops.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {

FaultPlan::FaultPlan(FaultSpec spec) : spec_(spec) {
  if (spec_.nth < 0) throw Error(ErrorCode::invalid_argument, "FaultPlan: nth must be >= 0, got " + std::to_string(spec_.nth));
  if (spec_.latency.count() < 0) throw Error(ErrorCode::invalid_argument, "FaultPlan: latency must not be negative");
}

bool FaultPlan::should_fail(FaultOp op) {
  const int call = counts_[static_cast<std::size_t>(op)].fetch_add(1) + 1;
  const int any_call = counts_[static_cast<std::size_t>(FaultOp::any)].fetch_add(1) + 1;
  const bool selected = spec_.op == FaultOp::any ? (spec_.nth == 0 || any_call == spec_.nth)
                                                 : op == spec_.op && (spec_.nth == 0 || call == spec_.nth);
  if (!selected) return false;
  // A short write only means something for write(), and is marked fired by write() once it has
  // actually split one (a write too small to split is not one).
  if (spec_.kind == FaultKind::short_write) return op == FaultOp::write || op == FaultOp::read;
  if (spec_.kind == FaultKind::crash) ::_exit(kInjectedCrashExitCode);  // no destructors, no flush: a crash
  fired_ = true;
  if (spec_.kind == FaultKind::latency) std::this_thread::sleep_for(spec_.latency);
  return true;
}

void FaultPlan::fail(const char* call, const std::string& context) const {
  throw io_error(call, spec_.kind == FaultKind::enospc ? ENOSPC : EIO, "injected, " + context);
}

FaultBackend::FaultBackend(std::unique_ptr<IoBackend> inner, FaultSpec spec)
    : FaultBackend(std::move(inner), std::make_shared<FaultPlan>(spec)) {}

FaultBackend::FaultBackend(std::unique_ptr<IoBackend> inner, std::shared_ptr<FaultPlan> plan)
    : inner_(std::move(inner)), plan_(std::move(plan)) {
  if (!inner_) throw Error(ErrorCode::invalid_argument, "FaultBackend: no inner backend");
  if (!plan_) throw Error(ErrorCode::invalid_argument, "FaultBackend: no fault plan");
}

std::string FaultBackend::name() const { return "fault(" + inner_->name() + ")"; }

FaultBackend::OpenedFile FaultBackend::opened(FileHandle file) const {
  std::lock_guard lock(files_mutex_);
  auto it = files_.find(file.id);
  return it == files_.end() ? OpenedFile{"<handle " + std::to_string(file.id) + ">", false} : it->second;
}

FileHandle FaultBackend::create(const fs::path& path, const OpenOptions& options) {
  if (plan_->should_fail(FaultOp::create) && plan_->injects_error()) plan_->fail("open", "file=" + path.string());
  const FileHandle handle = inner_->create(path, options);
  std::lock_guard lock(files_mutex_);
  files_[handle.id] = OpenedFile{path, options.direct};
  return handle;
}

void FaultBackend::close(FileHandle file) {
  const bool fail = plan_->should_fail(FaultOp::close) && plan_->injects_error();
  const OpenedFile closed = opened(file);
  {
    std::lock_guard lock(files_mutex_);
    files_.erase(file.id);
  }
  inner_->close(file);  // a failing close(2) still releases the descriptor
  if (fail) plan_->fail("close", "file=" + closed.path.string());
}

// write() and read() misbehave alike; `transfer(file, offset, buffer, length, done)` is the inner
// backend's call of the same kind.
template <class Byte, class Transfer>
void FaultBackend::transfer_with_faults(FaultOp op, const char* uring_call, const char* posix_call, FileHandle file,
                                        std::uint64_t offset, Byte* buffer, std::size_t length, Completion done,
                                        Transfer transfer) {
  if (!plan_->should_fail(op) || plan_->spec().kind == FaultKind::latency) {
    transfer(file, offset, buffer, length, std::move(done));
    return;
  }
  const OpenedFile target = opened(file);
  if (plan_->injects_error()) {
    std::exception_ptr error;
    try {
      plan_->fail(inner_->name() == "io_uring" ? uring_call : posix_call, detail::data_context(target.path, offset, length));
    } catch (...) {
      error = std::current_exception();
    }
    // An empty transfer carries the error through the inner backend, so it arrives on the same
    // thread as real completions and drain() waits for it; whatever that transfer reports is moot.
    transfer(file, offset, buffer, 0, [error, done = std::move(done)](std::exception_ptr) mutable { done(std::move(error)); });
    return;
  }
  // A short transfer: the inner backend gets the first part; the rest follows from its
  // completion, as a backend's own continuation would, so the caller still sees one whole call.
  std::size_t first = length / 2;
  if (target.direct) first -= first % inner_->direct_alignment();
  if (first == 0) {
    transfer(file, offset, buffer, length, std::move(done));
    return;
  }
  plan_->mark_fired();
  transfer(file, offset, buffer, first,
           [transfer, file, offset, buffer, length, first, done = std::move(done)](std::exception_ptr error) mutable {
             if (error) {
               done(std::move(error));
               return;
             }
             transfer(file, offset + first, buffer + first, length - first, std::move(done));
           });
}

void FaultBackend::write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length, Completion done) {
  IoBackend* inner = inner_.get();
  transfer_with_faults(FaultOp::write, "io_uring write", "pwrite", file, offset, buffer, length, std::move(done),
                       [inner](FileHandle f, std::uint64_t at, const std::byte* from, std::size_t n, Completion then) {
                         inner->write(f, at, from, n, std::move(then));
                       });
}

FileHandle FaultBackend::open_read(const fs::path& path, bool direct) {
  if (plan_->should_fail(FaultOp::open_read) && plan_->injects_error()) plan_->fail("open", "file=" + path.string());
  const FileHandle handle = inner_->open_read(path, direct);
  std::lock_guard lock(files_mutex_);
  files_[handle.id] = OpenedFile{path, direct};
  return handle;
}

void FaultBackend::read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) {
  IoBackend* inner = inner_.get();
  transfer_with_faults(FaultOp::read, "io_uring read", "pread", file, offset, buffer, length, std::move(done),
                       [inner](FileHandle f, std::uint64_t at, std::byte* into, std::size_t n, Completion then) {
                         inner->read(f, at, into, n, std::move(then));
                       });
}

void FaultBackend::sync(FileHandle file) {
  if (plan_->should_fail(FaultOp::sync) && plan_->injects_error()) plan_->fail("fsync", "file=" + opened(file).path.string());
  inner_->sync(file);
}

void FaultBackend::truncate(FileHandle file, std::uint64_t size) {
  if (plan_->should_fail(FaultOp::truncate) && plan_->injects_error()) {
    plan_->fail("ftruncate", "file=" + opened(file).path.string() + ", size=" + std::to_string(size));
  }
  inner_->truncate(file, size);
}

}  // namespace quicksave::io
