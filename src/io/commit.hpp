// Commit: the only code that makes a checkpoint visible. The protocol is at the top of commit.cpp.
//
// Use: begin() → write every output file at staging_path(name), fsync and close it → publish().
// Destroying an unpublished Commit (or abort()) removes its temporaries and leaves the previous
// checkpoint untouched. recover() repairs what a crashed save left behind.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/backend.hpp"

namespace quicksave::io {

enum class CommitMode {
  fresh,     // the target did not exist: a staging directory was renamed into place
  exchange,  // the target held only this pattern's files: swapped atomically with the staging directory
  in_place,  // the target holds other files too: files switched over under a journal
};
const char* to_string(CommitMode mode);

struct CommitResult {
  CommitMode mode = CommitMode::fresh;
  std::vector<std::string> removed;     // stale files of the pattern deleted (in-place mode)
  std::optional<fs::path> deferred_removal;  // the previous checkpoint's tree, to delete off the critical path
  std::vector<std::string> warnings;    // clean-up after the commit point that failed (harmless leftovers)
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

// Something an unfinished save left behind (read-only view; recover() is what acts on them).
struct Leftover {
  enum class Kind { staging_directory, journal, temporary, backup };
  enum class JournalState { not_a_journal, incomplete, uncommitted, committed };
  fs::path path;
  Kind kind = Kind::temporary;
  std::string tag;  // ".qs-<pid>-<hex>": the save it belongs to
  long pid = -1;    // the process that made it
  bool process_alive = false;
  JournalState journal = JournalState::not_a_journal;
};
const char* to_string(Leftover::Kind kind);

// The leftovers concerning the checkpoint folder `target` (which may not exist: a first save that
// crashed leaves only its staging directory beside it), sorted by save, then path.
std::vector<Leftover> find_leftovers(const fs::path& target);

struct RecoveryReport {
  std::vector<std::string> actions;  // one line per thing done, e.g. "rolled forward journal .qs-12-ab.journal"
  bool changed() const { return !actions.empty(); }
};

class Commit {
 public:
  // Prepares publishing `outputs` (final file names relative to `target`, in publication order:
  // shards, then the index) under `target`. `pattern` decides which existing files are this
  // checkpoint's (stale ones are removed when `is_main_process`). Runs recover() on the target first.
  static Commit begin(IoBackend& io, const fs::path& target, const std::string& pattern, std::vector<std::string> outputs,
                      bool is_main_process);

  Commit(Commit&& other) noexcept;
  Commit& operator=(Commit&&) = delete;
  Commit(const Commit&) = delete;
  ~Commit();

  CommitMode mode() const { return mode_; }
  const fs::path& target() const { return target_; }
  // Where the writer must create the output `name` (one of `outputs`).
  fs::path staging_path(const std::string& name) const { return layout().path_of(name); }
  StagingLayout layout() const { return StagingLayout{mode_, target_, staging_dir_, tag_}; }
  // Makes every output visible atomically (see the protocol). All outputs must be durable and
  // closed. Throws on failure, after restoring the previous state when that is possible.
  CommitResult publish();
  // Removes temporaries; never throws.
  void abort() noexcept;

 private:
  Commit(IoBackend& io, fs::path target, std::string pattern, std::vector<std::string> outputs, bool is_main_process);
  CommitResult publish_directory();
  CommitResult publish_in_place();

  IoBackend* io_;
  fs::path target_;
  std::string pattern_;
  std::vector<std::string> outputs_;
  bool is_main_process_;
  CommitMode mode_ = CommitMode::fresh;
  std::string tag_;          // ".qs-<pid>-<random>": names every temporary of this save
  fs::path staging_dir_;     // fresh/exchange: the sibling directory the files are written into
  bool done_ = false;
};

// Completes or rolls back what crashed saves left in `target` (and its staging siblings).
// Temporaries of processes that are still alive are left alone.
RecoveryReport recover(IoBackend& io, const fs::path& target);

// True when `name` is a file name this pattern produces: the single file, a shard
// (-NNNNN-of-NNNNN) or the index. Exact matches only (unlike the reference's prefix regex).
bool is_pattern_output(const std::string& name, const std::string& pattern);

}  // namespace quicksave::io
