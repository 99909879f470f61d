// The commit protocol. A crash at any instant leaves either the previous complete checkpoint or
// the new complete one; a partially written checkpoint is never visible as complete; the previous
// one is never deleted before the new one is durable. Names are those of names.hpp.
//
// 0. Every save takes the exclusive lock <parent>/.<name>.quicksave-lock first and holds it for
//    its whole life (a second writer gets ErrorCode::busy naming the holder, or waits). Holding
//    it, the save recovers what crashed saves left (recovery.cpp): a leftover is only ever touched
//    by someone holding the lock, so "its save is dead" is "I hold the lock", whatever pids say.
//
// A. Directory mode (target absent → `fresh`; target holding only this pattern's files and
//    is_main_process → `exchange`):
//   1. create the parent directories; mkdir the staging directory <parent>/.<name><tag>.tmp
//   2. the writer creates every data output inside it, writes it, fsyncs it and closes it;
//      publish() writes the index and the manifest the same way
//   3. fsync the staging directory
//   4. fresh: rename(staging, target)            — the atomic switch
//      exchange: renameat2(staging, target, RENAME_EXCHANGE) — the atomic switch; the staging
//      name now holds the previous checkpoint
//   5. fsync the parent directory                — the switch is durable: committed
//   6. exchange: release_previous() removes the previous tree, off the critical path
//   Recovery: a staging directory is removed (before 4 it holds a partial new checkpoint, after 4
//   the previous one; the target is complete either way). If step 5 fails the switch is undone;
//   if the undo fails too, the staging directory (now the previous checkpoint) is left in place.
//
// B. In-place mode (the target holds other files, e.g. config.json: the Hugging Face way):
//   1. the writer creates each output as <target>/<tag>.<name>, writes, fsyncs, closes
//   2. write the journal (journal.hpp) as <tag>.journal.tmp, fsync it, rename it to <tag>.journal:
//      for each output its final name and whether a previous file is there; the stale files
//   3. fsync the target directory
//   4. for each output: if the final name exists, hard-link it to <tag>.old.<name> (a backup);
//      rename(<tag>.<name>, name)
//   5. fsync the target directory
//   6. the commit point: write the mark (the journal's hash) as <tag>.committed.tmp, fsync it,
//      rename it to <tag>.committed, fsync the target directory. No protocol file is ever
//      rewritten or truncated, so no crash can tear the decision: before the rename there is no
//      mark (roll back), after it a complete one (roll forward).
//   7. remove the backups and the stale files; fsync; remove the journal; fsync; remove the mark
//   Recovery of a journal: with its mark, roll forward (step 7); without, roll back (restore the
//   backups over the finals, remove finals that had no predecessor and the temporaries, then the
//   journal). Temporaries and drafts without a journal (a crash before 2) are removed; a mark
//   without a journal is the end of step 7. A journal that breaks the rules of journal.hpp is
//   corrupt and nothing it names is touched.
#include "commit/commit.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <sstream>

#include "commit/in_place_switch.hpp"
#include "commit/journal.hpp"
#include "commit/names.hpp"
#include "commit/recovery.hpp"
#include "format/log.hpp"
#include "quicksave/error.hpp"

namespace quicksave {

const char* to_string(CommitMode mode) {
  switch (mode) {
    case CommitMode::fresh: return "fresh";
    case CommitMode::exchange: return "exchange";
    case CommitMode::in_place: return "in_place";
  }
  return "unknown";
}

}  // namespace quicksave

namespace quicksave::commit {
namespace {

std::string holder_text(const std::string& tag) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  ::gmtime_r(&now, &utc);  // not std::gmtime: its static result races with saves on other threads
  char when[32] = {};
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return "tag=" + tag + " " + process_identity() + " since=" + when;
}

}  // namespace

fs::path normalized_target(const fs::path& target) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(target), ec);
  if (ec) p = fs::absolute(target).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

Commit::Commit(FileSystem& fs, fs::path target, BeginOptions options)
    : fs_(&fs), target_(std::move(target)), options_(std::move(options)), tag_(new_tag()) {}

Commit::Commit(Commit&& other) noexcept
    : fs_(other.fs_),
      target_(std::move(other.target_)),
      options_(std::move(other.options_)),
      mode_(other.mode_),
      tag_(std::move(other.tag_)),
      staging_dir_(std::move(other.staging_dir_)),
      previous_tree_(std::move(other.previous_tree_)),
      staging_holds_previous_(other.staging_holds_previous_),
      lock_(std::move(other.lock_)),
      done_(other.done_) {
  other.done_ = true;
  other.previous_tree_.reset();
}

Commit::~Commit() {
  if (done_) release_previous();
  else abort();
}

Commit Commit::begin(FileSystem& fs, const fs::path& target_in, BeginOptions options) {
  for (const auto& name : options.outputs) {
    if (!is_plain_file_name(name)) {
      throw Error(ErrorCode::invalid_argument, "output file name '" + name + "' is not a plain file name");
    }
  }
  const fs::path target = normalized_target(target_in);
  if (!target.has_filename() || target == target.root_path()) {
    throw Error(ErrorCode::invalid_argument, "cannot save into " + target.string());
  }
  const auto check_target = [&] {
    const EntryType type = fs.type_of(target);
    if (type != EntryType::none && type != EntryType::directory) {
      throw Error(ErrorCode::already_exists, "save directory " + target.string() + " exists and is not a directory");
    }
    return type == EntryType::directory;
  };
  check_target();
  fs.make_directories(target.parent_path());

  Commit commit(fs, target, std::move(options));
  const fs::path lock_path = target.parent_path() / lock_file_name(target.filename().string());
  commit.lock_ = fs.lock(lock_path, holder_text(commit.tag_), false);
  if (!commit.lock_.held() && commit.options_.wait_for_lock) {
    // Said before blocking: a save that waits for another one is otherwise just slow.
    std::string holder;
    try {
      holder = fs.read_small_file(lock_path, 4096);
    } catch (const Error&) {
    }
    format::log(LogLevel::info, "waiting for the save that holds " + target.string() + " (" +
                                    (holder.empty() ? std::string("holder unknown") : holder) + ")");
    commit.lock_ = fs.lock(lock_path, holder_text(commit.tag_), true);
  }
  if (!commit.lock_.held()) {
    std::string holder;
    try {
      holder = fs.read_small_file(lock_path, 4096);
    } catch (const Error&) {
    }
    throw Error(ErrorCode::busy, "cannot save into " + target.string() + ": another save holds it (" +
                                     (holder.empty() ? std::string("holder unknown") : holder) +
                                     "); wait for it to finish, or ask to wait (wait_for_lock)");
  }
  const RecoveryReport recovered = recover_locked(fs, target);
  for (const auto& action : recovered.actions) format::log(LogLevel::warning, "recovered " + target.string() + ": " + action);
  for (const auto& note : recovered.left_alone) format::log(LogLevel::warning, "recovery of " + target.string() + ": " + note);

  const bool exists = check_target();
  if (!exists) {
    commit.mode_ = CommitMode::fresh;
  } else {
    bool only_ours = commit.options_.is_main_process;
    for (const DirEntry& entry : fs.list(target)) {
      if (entry.type != EntryType::file || !is_checkpoint_file(entry.name, commit.options_.pattern)) {
        only_ours = false;
        break;
      }
    }
    commit.mode_ = only_ours ? CommitMode::exchange : CommitMode::in_place;
  }
  if (commit.mode_ != CommitMode::in_place) {
    commit.staging_dir_ = target.parent_path() / staging_directory_name(target.filename().string(), commit.tag_);
    fs.make_directory(commit.staging_dir_);                              // step A1
  }
  return commit;
}

fs::path StagingLayout::path_of(const std::string& name) const {
  if (mode == CommitMode::in_place) return target / temporary_name(tag, name);
  return staging_dir / name;
}

std::string StagingLayout::to_string() const {
  // Tab-separated: none of the fields can hold a tab (plain names, and paths made here).
  return std::string(quicksave::to_string(mode)) + "\t" + target.string() + "\t" + staging_dir.string() + "\t" + tag;
}

StagingLayout StagingLayout::parse(const std::string& text) {
  std::vector<std::string> fields;
  std::stringstream ss(text);
  for (std::string f; std::getline(ss, f, '\t');) fields.push_back(f);
  if (text.ends_with("\t")) fields.emplace_back();
  if (fields.size() != 4) throw Error(ErrorCode::corrupt, "malformed staging layout: " + text);
  StagingLayout layout;
  if (fields[0] == "fresh") layout.mode = CommitMode::fresh;
  else if (fields[0] == "exchange") layout.mode = CommitMode::exchange;
  else if (fields[0] == "in_place") layout.mode = CommitMode::in_place;
  else throw Error(ErrorCode::corrupt, "malformed staging layout mode: " + fields[0]);
  layout.target = fields[1];
  layout.staging_dir = fields[2];
  layout.tag = fields[3];
  if (!is_tag(layout.tag)) throw Error(ErrorCode::corrupt, "malformed staging layout tag: " + layout.tag);
  return layout;
}

CommitResult Commit::publish(const std::vector<std::pair<std::string, std::string>>& small_files) {
  if (done_) throw Error(ErrorCode::failed_precondition, "commit of " + target_.string() + " already finished");
  for (const auto& [name, contents] : small_files) {
    if (std::find(options_.outputs.begin(), options_.outputs.end(), name) == options_.outputs.end()) {
      throw Error(ErrorCode::internal, "publish: '" + name + "' is not an output of this commit");
    }
    fs_->write_file_durably(staging_path(name), contents);              // step A2 / B1
  }
  CommitResult result = mode_ == CommitMode::in_place ? publish_in_place() : publish_directory();
  done_ = true;
  return result;
}

CommitResult Commit::publish_directory() {
  fs_->sync_directory(staging_dir_);                                     // step A3
  if (mode_ == CommitMode::exchange) {
    try {
      fs_->exchange(staging_dir_, target_);                             // step A4 (exchange)
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unavailable) throw;
      // The filesystem cannot swap directories: move the files over in place instead.
      for (const auto& name : options_.outputs) fs_->rename(staging_dir_ / name, target_ / temporary_name(tag_, name));
      fs_->remove_all(staging_dir_);
      staging_dir_.clear();
      mode_ = CommitMode::in_place;
      return publish_in_place();
    }
  } else {
    fs_->rename(staging_dir_, target_);                                  // step A4 (fresh)
  }
  try {
    fs_->sync_directory(target_.parent_path());                          // step A5
  } catch (const Error& e) {
    // The switch is not known to be durable: undo it so that the failure leaves the previous
    // state; abort() then removes the staging directory, which holds the new files again.
    try {
      if (mode_ == CommitMode::exchange) fs_->exchange(staging_dir_, target_);
      else fs_->rename(target_, staging_dir_);
    } catch (...) {
      // Undo failed: the target holds the new checkpoint and the staging directory the
      // previous one. Never delete it here; the error says where it is.
      if (mode_ == CommitMode::exchange) staging_holds_previous_ = true;
      throw Error(e.code(), std::string(e.what()) + "; the switch could not be undone: " + target_.string() +
                                " holds the new checkpoint" +
                                (mode_ == CommitMode::exchange ? ", " + staging_dir_.string() + " the previous one" : ""),
                  e.errno_value());
    }
    throw;
  }
  CommitResult result{mode_, {}, {}};
  if (mode_ == CommitMode::exchange) previous_tree_ = staging_dir_;     // step A6, in release_previous()
  staging_dir_.clear();
  return result;
}

CommitResult Commit::publish_in_place() {
  Journal journal{.tag = tag_, .pattern = options_.pattern, .writer = process_identity()};
  for (const auto& name : options_.outputs) {
    const std::uint64_t inode = fs_->file_id(target_ / temporary_name(tag_, name));
    if (inode == 0) throw Error(ErrorCode::internal, "publish: the output " + name + " was never written");
    journal.entries.push_back(Journal::Entry{name, fs_->type_of(target_ / name) != EntryType::none, inode});
  }
  if (options_.is_main_process) {
    for (const DirEntry& entry : fs_->list(target_)) {
      if (entry.type == EntryType::file && is_checkpoint_file(entry.name, options_.pattern) &&
          std::find(options_.outputs.begin(), options_.outputs.end(), entry.name) == options_.outputs.end()) {
        journal.stale.push_back(Journal::Stale{entry.name, fs_->file_id(target_ / entry.name)});
      }
    }
    std::sort(journal.stale.begin(), journal.stale.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  }
  const std::string journal_text = encode_journal(journal);
  const fs::path journal_path = target_ / journal_name(tag_);
  const fs::path mark_path = target_ / commit_mark_name(tag_);
  bool journal_written = false;
  try {
    fs_->write_file_durably(target_ / journal_draft_name(tag_), journal_text);  // step B2
    fs_->rename(target_ / journal_draft_name(tag_), journal_path);
    journal_written = true;
    fs_->sync_directory(target_);                                        // step B3
    for (const auto& e : journal.entries) {                              // step B4
      if (e.had_previous) {
        const fs::path backup = target_ / backup_name(tag_, e.final_name);
        try {
          fs_->hard_link(target_ / e.final_name, backup);
        } catch (const Error& error) {
          if (error.code() != ErrorCode::unavailable) throw;
          fs_->rename(target_ / e.final_name, backup);  // no hard links here: the journal covers the gap
        }
      }
      fs_->rename(target_ / temporary_name(tag_, e.final_name), target_ / e.final_name);
    }
    fs_->sync_directory(target_);                                        // step B5
    fs_->write_file_durably(target_ / commit_mark_draft_name(tag_), encode_commit_mark(journal_text));  // step B6
    fs_->rename(target_ / commit_mark_draft_name(tag_), mark_path);     // the commit point
  } catch (...) {
    try {
      if (fs_->type_of(target_ / commit_mark_draft_name(tag_)) != EntryType::none) fs_->remove(target_ / commit_mark_draft_name(tag_));
      if (journal_written) {
        roll_back(*fs_, target_, journal);
      } else if (fs_->type_of(target_ / journal_draft_name(tag_)) != EntryType::none) {
        fs_->remove(target_ / journal_draft_name(tag_));
      }
    } catch (...) {
      // The journal stays; the next writer (or `quicksave recover`) finishes the roll-back once
      // it holds the lock. abort() must not touch the files meanwhile.
      done_ = true;
    }
    throw;
  }
  try {
    fs_->sync_directory(target_);                                        // step B6: the mark is durable
  } catch (...) {
    // Not known to be durable: take the mark back and roll back, so the failure means "old".
    // If even that fails the mark stands and the next recovery rolls forward: "new".
    try {
      fs_->remove(mark_path);
      roll_back(*fs_, target_, journal);
    } catch (...) {
      done_ = true;
    }
    throw;
  }
  CommitResult result{CommitMode::in_place, {}, {}};
  roll_forward(*fs_, target_, journal, &result.removed, &result.warnings);  // step B7
  return result;
}

void Commit::release_previous() noexcept {
  if (previous_tree_) {
    try {
      fs_->remove_all(*previous_tree_);
    } catch (...) {
      // Harmless: the next writer's recovery removes the staging directory.
    }
    previous_tree_.reset();
  }
  lock_.release();
}

void Commit::abort() noexcept {
  if (!done_) {
    done_ = true;
    try {
      if (!staging_dir_.empty()) {
        if (!staging_holds_previous_) fs_->remove_all(staging_dir_);
      } else if (mode_ == CommitMode::in_place) {
        for (const auto& name : options_.outputs) {
          const fs::path temporary = target_ / temporary_name(tag_, name);
          if (fs_->type_of(temporary) != EntryType::none) fs_->remove(temporary);
        }
      }
    } catch (...) {
      // Best effort: the next writer's recovery removes what is left.
    }
  }
  previous_tree_.reset();
  lock_.release();
}

}  // namespace quicksave::commit
