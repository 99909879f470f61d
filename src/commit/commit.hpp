// The commit module: the only code that makes a checkpoint visible, and the only code that
// repairs what an interrupted save left. It owns the protocol (commit.cpp, numbered at the top),
// the journal and commit mark (journal.hpp), the names of its files (names.hpp), recovery and the
// read-only view loads use (recovery.hpp). It may use format, plan and io (for the posix calls
// behind its FileSystem seam); it never writes shard bytes (io::IoBackend does).
//
// Use: begin() → write every data output at staging_path(name), fsync and close it →
// publish(small files) → release_previous(). Destroying an unpublished Commit (or abort())
// removes its temporaries and leaves the previous checkpoint untouched. A Commit holds the
// target's writer lock from begin() until it is destroyed or release_previous() returns.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "commit/file_system.hpp"
#include "quicksave/save.hpp"

namespace quicksave::commit {

// The public quicksave::CommitMode (quicksave/save.hpp): fresh, exchange or in_place.
using quicksave::CommitMode;

struct CommitResult {
  CommitMode mode = CommitMode::fresh;
  std::vector<std::string> removed;   // stale files of the pattern deleted (in-place mode)
  std::vector<std::string> warnings;  // clean-up after the commit point that failed (harmless leftovers)
};

// Where a commit's outputs are written before publication: enough for another process to write
// into the same commit (distributed saves). Serialises to one line of text.
struct StagingLayout {
  CommitMode mode = CommitMode::fresh;
  fs::path target;
  fs::path staging_dir;  // directory modes
  std::string tag;       // in-place mode: temporaries are <target>/<tag>.<name>
  fs::path path_of(const std::string& name) const;
  std::string to_string() const;
  static StagingLayout parse(const std::string& text);
};

struct BeginOptions {
  std::string pattern;               // decides which existing files are this checkpoint's
  std::vector<std::string> outputs;  // final names, in publication order: shards, then index and manifest
  bool is_main_process = true;       // only the main process removes stale files of the pattern
  bool wait_for_lock = false;        // another writer holds the folder: wait for it instead of ErrorCode::busy
};

class Commit {
 public:
  // Takes the target's writer lock (ErrorCode::busy naming the holder, unless wait_for_lock),
  // recovers what crashed saves left, and prepares the staging names.
  static Commit begin(FileSystem& fs, const fs::path& target, BeginOptions options);

  Commit(Commit&& other) noexcept;
  Commit& operator=(Commit&&) = delete;
  Commit(const Commit&) = delete;
  ~Commit();

  CommitMode mode() const { return mode_; }
  const fs::path& target() const { return target_; }
  // Where the writer must create the output `name` (one of `outputs`).
  fs::path staging_path(const std::string& name) const { return layout().path_of(name); }
  StagingLayout layout() const { return StagingLayout{mode_, target_, staging_dir_, tag_}; }
  // Writes `small_files` (name → contents, each one of `outputs`: the index, the manifest)
  // durably into staging, then makes every output visible atomically (see the protocol). Every
  // other output must already be durable and closed. Throws on failure, after restoring the
  // previous state when that is possible.
  CommitResult publish(const std::vector<std::pair<std::string, std::string>>& small_files = {});
  // After publish(): removes the previous checkpoint's tree (exchange mode; slow for big files,
  // so callers do it after reporting the commit) and releases the lock. Never throws.
  void release_previous() noexcept;
  // Removes temporaries and releases the lock; never throws.
  void abort() noexcept;

 private:
  Commit(FileSystem& fs, fs::path target, BeginOptions options);
  CommitResult publish_directory();
  CommitResult publish_in_place();

  FileSystem* fs_;
  fs::path target_;
  BeginOptions options_;
  CommitMode mode_ = CommitMode::fresh;
  std::string tag_;          // ".qs-<16 hex>": names every temporary of this save
  fs::path staging_dir_;     // fresh/exchange: the sibling directory the files are written into
  std::optional<fs::path> previous_tree_;  // exchange: the previous checkpoint, removed by release_previous()
  bool staging_holds_previous_ = false;    // a failed exchange could not be undone: never delete it
  FileLock lock_;
  bool done_ = false;
};

// Absolute, normalised, symlinks of existing parents resolved, no trailing separator ("ckpt/",
// "./ckpt" and "ckpt" are the same folder, and so is a symlink to it).
fs::path normalized_target(const fs::path& target);

}  // namespace quicksave::commit
