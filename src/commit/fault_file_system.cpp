#include "commit/fault_file_system.hpp"

#include "io/posix_ops.hpp"
#include "quicksave/error.hpp"

namespace quicksave::commit {

using io::FaultOp;

FaultFileSystem::FaultFileSystem(std::unique_ptr<FileSystem> inner, std::shared_ptr<io::FaultPlan> plan)
    : inner_(std::move(inner)), plan_(std::move(plan)) {
  if (!inner_ || !plan_) throw Error(ErrorCode::invalid_argument, "FaultFileSystem: no inner file system or no plan");
}

void FaultFileSystem::step(FaultOp op, const char* call, const std::string& context) {
  if (plan_->should_fail(op) && plan_->injects_error()) plan_->fail(call, context);
}

void FaultFileSystem::rename(const fs::path& from, const fs::path& to) {
  step(FaultOp::rename, "rename", "from=" + from.string() + ", to=" + to.string());
  inner_->rename(from, to);
}

void FaultFileSystem::exchange(const fs::path& a, const fs::path& b) {
  step(FaultOp::exchange, "renameat2", "a=" + a.string() + ", b=" + b.string());
  inner_->exchange(a, b);
}

void FaultFileSystem::hard_link(const fs::path& from, const fs::path& to) {
  step(FaultOp::hard_link, "link", "from=" + from.string() + ", to=" + to.string());
  inner_->hard_link(from, to);
}

void FaultFileSystem::remove(const fs::path& path) {
  step(FaultOp::remove, "unlink", "file=" + path.string());
  inner_->remove(path);
}

void FaultFileSystem::remove_all(const fs::path& path) {
  step(FaultOp::remove_all, "remove_all", "dir=" + path.string());
  inner_->remove_all(path);
}

void FaultFileSystem::make_directory(const fs::path& path) {
  step(FaultOp::make_directory, "mkdir", "dir=" + path.string());
  inner_->make_directory(path);
}

void FaultFileSystem::make_directories(const fs::path& path) {
  step(FaultOp::make_directory, "mkdir", "dir=" + path.string());
  inner_->make_directories(path);
}

void FaultFileSystem::sync_directory(const fs::path& path) {
  step(FaultOp::sync_directory, "fsync", "dir=" + path.string());
  inner_->sync_directory(path);
}

void FaultFileSystem::write_file_durably(const fs::path& path, std::string_view contents) {
  step(FaultOp::write_file, "pwrite", io::detail::data_context(path, 0, contents.size()));
  inner_->write_file_durably(path, contents);
}

FileLock FaultFileSystem::lock(const fs::path& path, std::string_view holder, bool wait) {
  step(FaultOp::lock, "fcntl(F_OFD_SETLK)", "lock=" + path.string());
  return inner_->lock(path, holder, wait);
}

}  // namespace quicksave::commit
