// FaultFileSystem: a FileSystem decorator driven by an io::FaultPlan (shared with io::FaultBackend
// when a test wants "the Nth operation of either seam"): the chosen call fails with EIO or
// ENOSPC, sleeps, or ends the process on the spot (FaultKind::crash), exactly where the protocol
// makes it.
#pragma once

#include <memory>

#include "commit/file_system.hpp"
#include "io/fault_backend.hpp"

namespace quicksave::commit {

class FaultFileSystem final : public FileSystem {
 public:
  FaultFileSystem(std::unique_ptr<FileSystem> inner, std::shared_ptr<io::FaultPlan> plan);
  FaultFileSystem(std::unique_ptr<FileSystem> inner, io::FaultSpec spec)
      : FaultFileSystem(std::move(inner), std::make_shared<io::FaultPlan>(spec)) {}
  const std::shared_ptr<io::FaultPlan>& plan() const { return plan_; }

  void rename(const fs::path& from, const fs::path& to) override;
  void exchange(const fs::path& a, const fs::path& b) override;
  void hard_link(const fs::path& from, const fs::path& to) override;
  void remove(const fs::path& path) override;
  void remove_all(const fs::path& path) override;
  void make_directory(const fs::path& path) override;
  void make_directories(const fs::path& path) override;
  void sync_directory(const fs::path& path) override;
  void write_file_durably(const fs::path& path, std::string_view contents) override;
  std::string read_small_file(const fs::path& path, std::size_t max_bytes) override {
    return inner_->read_small_file(path, max_bytes);
  }
  std::vector<DirEntry> list(const fs::path& dir) override { return inner_->list(dir); }
  EntryType type_of(const fs::path& path) override { return inner_->type_of(path); }
  std::uint64_t file_id(const fs::path& path) override { return inner_->file_id(path); }
  FileLock lock(const fs::path& path, std::string_view holder, bool wait) override;
  std::optional<std::string> lock_holder(const fs::path& path) override { return inner_->lock_holder(path); }

 private:
  // Counts the call and throws the injected error when the plan picks it.
  void step(io::FaultOp op, const char* call, const std::string& context);

  std::unique_ptr<FileSystem> inner_;
  std::shared_ptr<io::FaultPlan> plan_;
};

}  // namespace quicksave::commit
