// Recovery and the read-only view of a folder that holds an interrupted save.
//
// Two readers of the same leftovers, with one decision rule (decide() in recovery.cpp):
//   - recover() runs in writers (under the target's writer lock, after begin() took it) and in
//     `quicksave recover` (which takes the lock, or leaves everything alone while a save holds it).
//     It rolls in-place switches forward (commit mark present) or back (absent), removes staging
//     directories and orphan temporaries, and leaves anything it cannot vouch for alone.
//   - read_view() never writes: a load of a crashed folder reads the checkpoint the journal says
//     is complete (a backup in place of a switched file when the switch was not committed; the
//     stale files hidden when it was), so any number of loads, and loads from a read-only mount,
//     work while the folder still holds leftovers.
#pragma once

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "commit/file_system.hpp"

namespace quicksave::commit {

// Something an unfinished save left behind (read-only description; recover() is what acts).
struct Leftover {
  enum class Kind { staging_directory, journal, temporary, backup, commit_mark, draft };
  enum class JournalState { not_a_journal, corrupt, uncommitted, committed };
  fs::path path;
  Kind kind = Kind::temporary;
  std::string tag;  // ".qs-<hex>": the save it belongs to
  JournalState journal = JournalState::not_a_journal;
  std::string detail;  // corrupt journals: why; journals: the writer that made it
};
const char* to_string(Leftover::Kind kind);

// The leftovers concerning the checkpoint folder `target` (which may not exist: a first save that
// crashed leaves only its staging directory beside it), sorted by save, then path.
std::vector<Leftover> find_leftovers(FileSystem& fs, const fs::path& target);

// Whether a save holds `target`'s writer lock now, and its holder text when one does.
struct WriterStatus {
  bool busy = false;
  std::string holder;
};
WriterStatus writer_status(FileSystem& fs, const fs::path& target);

struct RecoveryReport {
  std::vector<std::string> actions;    // one line per thing done, e.g. "rolled forward the interrupted switch .qs-….journal"
  std::vector<std::string> left_alone; // what was not touched, and why (a save holds the lock, a corrupt journal)
  bool changed() const { return !actions.empty(); }
};

// For writers that hold the target's lock (Commit::begin).
RecoveryReport recover_locked(FileSystem& fs, const fs::path& target);
// Takes the lock without waiting; when a save holds it, touches nothing and says so.
RecoveryReport recover(FileSystem& fs, const fs::path& target);

// How to read a folder as its last complete checkpoint, without changing it.
struct CheckpointView {
  fs::path directory;
  std::map<std::string, std::string> redirected;  // final name → the file in `directory` holding its committed bytes
  std::set<std::string> hidden;                   // names that are not part of the complete checkpoint
  std::vector<std::string> notes;                 // what was decided, for verify and inspect

  bool visible(const std::string& name) const { return !hidden.contains(name); }
  // The file to read for `name`.
  fs::path path_of(const std::string& name) const;
  // True when nothing needed deciding (no journal in the folder).
  bool clean() const { return redirected.empty() && hidden.empty() && notes.empty(); }
};
CheckpointView read_view(FileSystem& fs, const fs::path& directory);

}  // namespace quicksave::commit
