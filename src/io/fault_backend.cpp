// FaultBackend: injects EIO, ENOSPC, short writes and latency into the Nth call of one operation,
// for the fault-matrix and crash tests. Injected failures look like real ones (same call names,
// errno and message shape, plus "injected") and travel the same way: a failed write completes on
// the inner backend's completion thread and is counted by drain(), so code under test cannot
// tell them from the kernel's.
#include "io/fault_backend.hpp"

#include <cerrno>
#include <thread>
#include <utility>

#include "io/posix_ops.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {

namespace {

constexpr std::size_t kOpCount = static_cast<std::size_t>(FaultOp::hard_link) + 1;

std::size_t index_of(FaultOp op) { return static_cast<std::size_t>(op); }

}  // namespace

FaultBackend::FaultBackend(std::unique_ptr<IoBackend> inner, FaultSpec spec) : inner_(std::move(inner)), spec_(spec) {
  static_assert(kOpCount == sizeof(counts_) / sizeof(counts_[0]), "one counter per FaultOp");
  if (!inner_) throw Error(ErrorCode::invalid_argument, "FaultBackend: no inner backend");
  if (spec_.nth < 0) throw Error(ErrorCode::invalid_argument, "FaultBackend: nth must be >= 0, got " + std::to_string(spec_.nth));
  if (spec_.latency.count() < 0) throw Error(ErrorCode::invalid_argument, "FaultBackend: latency must not be negative");
}

int FaultBackend::calls(FaultOp op) const { return counts_[index_of(op)].load(); }

std::string FaultBackend::name() const { return "fault(" + inner_->name() + ")"; }

bool FaultBackend::should_fail(FaultOp op) {
  const int call = counts_[index_of(op)].fetch_add(1) + 1;
  if (op != spec_.op || (spec_.nth != 0 && call != spec_.nth)) return false;
  // A short write only means something for write(), and is marked fired by write() once it has
  // actually split one (a write too small to split is not one).
  if (spec_.kind == FaultKind::short_write) return op == FaultOp::write;
  fired_ = true;
  if (spec_.kind == FaultKind::latency) std::this_thread::sleep_for(spec_.latency);
  return true;
}

void FaultBackend::fail(const char* call, const std::string& context) const {
  throw io_error(call, spec_.kind == FaultKind::enospc ? ENOSPC : EIO, "injected, " + context);
}

FaultBackend::OpenedFile FaultBackend::opened(FileHandle file) const {
  std::lock_guard lock(files_mutex_);
  auto it = files_.find(file.id);
  return it == files_.end() ? OpenedFile{"<handle " + std::to_string(file.id) + ">", false} : it->second;
}

FileHandle FaultBackend::create(const fs::path& path, const OpenOptions& options) {
  if (should_fail(FaultOp::create) && injects_error()) fail("open", "file=" + path.string());
  const FileHandle handle = inner_->create(path, options);
  std::lock_guard lock(files_mutex_);
  files_[handle.id] = OpenedFile{path, options.direct};
  return handle;
}

void FaultBackend::close(FileHandle file) {
  {
    std::lock_guard lock(files_mutex_);
    files_.erase(file.id);
  }
  inner_->close(file);
}

void FaultBackend::write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
                         Completion done) {
  if (!should_fail(FaultOp::write) || spec_.kind == FaultKind::latency) {
    inner_->write(file, offset, buffer, length, std::move(done));
    return;
  }
  const OpenedFile target = opened(file);
  if (injects_error()) {
    const char* call = inner_->name() == "io_uring" ? "io_uring write" : "pwrite";
    std::exception_ptr error;
    try {
      fail(call, detail::write_context(target.path, offset, length));
    } catch (...) {
      error = std::current_exception();
    }
    // An empty write carries the error through the inner backend, so it arrives on the same
    // thread as real completions and drain() waits for it; whatever that write reports is moot.
    inner_->write(file, offset, buffer, 0,
                  [error, done = std::move(done)](std::exception_ptr) mutable { done(std::move(error)); });
    return;
  }
  // short_write: the inner backend gets the first part; the rest follows from its completion,
  // as a backend's own continuation would, so the caller still sees one complete write.
  std::size_t first = length / 2;
  if (target.direct) first -= first % inner_->direct_alignment();
  if (first == 0) {
    inner_->write(file, offset, buffer, length, std::move(done));
    return;
  }
  fired_ = true;
  IoBackend* inner = inner_.get();
  inner_->write(file, offset, buffer, first,
                [inner, file, offset, buffer, length, first, done = std::move(done)](std::exception_ptr error) mutable {
                  if (error) {
                    done(std::move(error));
                    return;
                  }
                  inner->write(file, offset + first, buffer + first, length - first, std::move(done));
                });
}

void FaultBackend::sync(FileHandle file) {
  if (should_fail(FaultOp::sync) && injects_error()) fail("fsync", "file=" + opened(file).path.string());
  inner_->sync(file);
}

void FaultBackend::rename(const fs::path& from, const fs::path& to) {
  if (should_fail(FaultOp::rename) && injects_error()) fail("rename", "from=" + from.string() + ", to=" + to.string());
  inner_->rename(from, to);
}

void FaultBackend::exchange(const fs::path& a, const fs::path& b) {
  if (should_fail(FaultOp::exchange) && injects_error()) fail("renameat2", "a=" + a.string() + ", b=" + b.string());
  inner_->exchange(a, b);
}

void FaultBackend::remove(const fs::path& path) {
  if (should_fail(FaultOp::remove) && injects_error()) fail("unlink", "file=" + path.string());
  inner_->remove(path);
}

void FaultBackend::hard_link(const fs::path& from, const fs::path& to) {
  if (should_fail(FaultOp::hard_link) && injects_error()) fail("link", "from=" + from.string() + ", to=" + to.string());
  inner_->hard_link(from, to);
}

void FaultBackend::make_directory(const fs::path& path) {
  if (should_fail(FaultOp::make_directory) && injects_error()) fail("mkdir", "dir=" + path.string());
  inner_->make_directory(path);
}

void FaultBackend::sync_directory(const fs::path& path) {
  if (should_fail(FaultOp::sync_directory) && injects_error()) fail("fsync", "dir=" + path.string());
  inner_->sync_directory(path);
}

void FaultBackend::write_file_durably(const fs::path& path, std::string_view contents) {
  if (should_fail(FaultOp::write_file) && injects_error()) {
    fail("pwrite", detail::write_context(path, 0, contents.size()));
  }
  inner_->write_file_durably(path, contents);
}

}  // namespace quicksave::io
