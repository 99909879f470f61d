// SaveCoordinator: how one SaveJob's files become part of a published checkpoint.
//
// A single process (LocalCoordinator) writes every file and runs commit::Commit itself. In a
// distributed save (src/dist), each process writes only the files, or the byte ranges of shared
// files, assigned to it; one process runs the commit protocol once everyone's bytes are durable.
// SaveJob calls, in order: begin → (creates the files it owns) files_created →
// wait_for_files_of_others → (writes, fsyncs, closes) → publish → release_previous; or abort on
// any failure.
#pragma once

#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commit/commit.hpp"
#include "commit/file_system.hpp"
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

// What a save asks of its commit (from SaveOptions).
struct CommitSettings {
  bool is_main_process = true;
  bool wait_for_lock = false;
  bool checksums = true;
};

class SaveCoordinator {
 public:
  virtual ~SaveCoordinator() = default;
  virtual const Assignment& assignment() const = 0;
  // Prepares the commit (may wait for another process to prepare it).
  virtual void begin(commit::FileSystem& fs, const plan::SavePlan& plan, const std::filesystem::path& directory,
                     const CommitSettings& settings) = 0;
  // True when publish() takes this save's checksum manifest (the process stages every chunk).
  virtual bool publishes_manifest() const { return false; }
  // Where the plan's output `name` is written before it is published.
  virtual std::filesystem::path staging_path(const std::string& name) const = 0;
  // This process has created the files it owns.
  virtual void files_created() {}
  // Returns once the files this process writes into but does not own exist.
  virtual void wait_for_files_of_others() {}
  // Every file this process wrote is durable and closed: make the checkpoint visible (or wait
  // until the process that does has done it), with the index and, when given, the manifest.
  virtual commit::CommitResult publish(const plan::SavePlan& plan, const std::optional<std::string>& manifest_json) = 0;
  // After `committed` has been reported: remove the previous checkpoint's tree, release the lock.
  virtual void release_previous() noexcept {}
  // The save failed here with `error`: remove temporaries, tell the others. Never throws.
  virtual void abort(const std::exception_ptr& error) noexcept = 0;
};

std::unique_ptr<SaveCoordinator> make_local_coordinator(const plan::SavePlan& plan);

}  // namespace quicksave::engine
