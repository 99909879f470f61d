// SaveCoordinator: how one SaveJob's files become part of a published checkpoint.
//
// A single process (LocalCoordinator) writes every file and runs io::Commit itself. In a
// distributed save (src/dist), each process writes only the files, or the byte ranges of shared
// files, assigned to it; one process runs the commit protocol once everyone's bytes are durable.
// SaveJob calls, in order: begin → (creates the files it owns) files_created →
// wait_for_files_of_others → (writes, fsyncs, closes) → publish; or abort on any failure.
#pragma once

#include <exception>
#include <filesystem>
#include <memory>
#include <vector>

#include "io/backend.hpp"
#include "io/commit.hpp"
#include "plan/save_plan.hpp"

namespace quicksave::engine {

// The part of a plan one process writes.
struct Assignment {
  struct File {
    std::size_t file = 0;  // index into SavePlan::files
    bool owner = true;     // creates (truncates, preallocates) the file; others open it as it is
  };
  std::vector<File> files;
  std::vector<plan::Chunk> chunks;  // the byte ranges to write, in file order
};

// Everything: the single-process case.
Assignment whole_plan(const plan::SavePlan& plan);

class SaveCoordinator {
 public:
  virtual ~SaveCoordinator() = default;
  virtual const Assignment& assignment() const = 0;
  // Prepares the commit (may wait for another process to prepare it).
  virtual void begin(io::IoBackend& io, const plan::SavePlan& plan, const std::filesystem::path& directory,
                     bool is_main_process) = 0;
  // Where the plan's output `name` is written before it is published.
  virtual std::filesystem::path staging_path(const std::string& name) const = 0;
  // This process has created the files it owns.
  virtual void files_created() {}
  // Returns once the files this process writes into but does not own exist.
  virtual void wait_for_files_of_others() {}
  // Every file this process wrote is durable and closed: make the checkpoint visible (or wait
  // until the process that does has done it).
  virtual io::CommitResult publish(io::IoBackend& io, const plan::SavePlan& plan) = 0;
  // The save failed here with `error`: remove temporaries, tell the others. Never throws.
  virtual void abort(const std::exception_ptr& error) noexcept = 0;
};

std::unique_ptr<SaveCoordinator> make_local_coordinator(const plan::SavePlan& plan);

}  // namespace quicksave::engine
