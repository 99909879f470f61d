// The commit protocol. A crash at any instant leaves either the previous complete checkpoint or
// the new complete one; a partially written checkpoint is never visible as complete; the previous
// one is never deleted before the new one is durable.
//
// Every temporary carries the save's tag ".qs-<pid>-<random>" so recovery can tell whose it is.
//
// A. Directory mode (target absent → `fresh`; target holding only this pattern's files and
//    is_main_process → `exchange`):
//   1. create the parent directories; mkdir the staging directory  <parent>/.<name>.qs-<pid>-<r>.tmp
//   2. the writer creates every output inside it, writes it, fsyncs it and closes it; the index last
//   3. fsync the staging directory
//   4. fresh: rename(staging, target)            — the atomic switch
//      exchange: renameat2(staging, target, RENAME_EXCHANGE) — the atomic switch; the staging
//      name now holds the previous checkpoint
//   5. fsync the parent directory                — the switch is durable: committed
//   6. exchange: the previous tree is removed later, off the critical path (deferred_removal)
//   Recovery: a staging directory of a dead process is removed (before 4 it holds a partial new
//   checkpoint, after 4 the previous one; the target is complete either way).
//
// B. In-place mode (the target holds other files, e.g. config.json: the Hugging Face way):
//   1. the writer creates each output as <target>/<tag>.<name>, writes, fsyncs, closes
//   2. write the journal <target>/<tag>.journal durably: for each output its temporary, its
//      final name and whether a previous file exists there; the stale files to delete
//   3. fsync the target directory
//   4. for each output: if the final name exists, hard-link it to <tag>.old.<name> (a backup);
//      rename(temporary, final)
//   5. fsync the target directory
//   6. append "committed" to the journal and fsync it — the commit point
//   7. remove the backups and the stale files; fsync the directory; remove the journal
//   Recovery of a journal of a dead process: without "committed", roll back (restore backups
//   over finals, remove finals that had no predecessor, remove temporaries); with "committed",
//   roll forward (step 7). Temporaries without a journal (crash before 2) are removed.
#include "io/commit.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <tuple>

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave::io {
namespace {

constexpr std::string_view kTagPrefix = ".qs-";

std::string make_tag() {
  std::random_device rd;
  std::ostringstream out;
  out << kTagPrefix << ::getpid() << '-' << std::hex << (static_cast<std::uint64_t>(rd()) << 32 | rd());
  return out.str();
}

// The pid inside a tag-bearing name (".qs-<pid>-..." possibly after a prefix), or -1.
long tag_pid(std::string_view name) {
  const auto at = name.find(kTagPrefix);
  if (at == std::string_view::npos) return -1;
  long pid = 0;
  std::size_t i = at + kTagPrefix.size();
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) pid = pid * 10 + (name[i++] - '0');
  return (i < name.size() && name[i] == '-') ? pid : -1;
}

// The tag itself (".qs-<pid>-<hex>") found in `name`, or empty.
std::string tag_of(std::string_view name) {
  const auto at = name.find(kTagPrefix);
  if (at == std::string_view::npos || tag_pid(name) < 0) return {};
  auto end = name.find_first_of(".", at + 1);
  return std::string(name.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at));
}

bool process_alive(long pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

bool exists_no_follow(const fs::path& p) {
  std::error_code ec;
  return fs::symlink_status(p, ec).type() != fs::file_type::not_found && !ec;
}

void check_name(const std::string& name) {
  if (name.empty() || name.find_first_of("\n\t\r") != std::string::npos) {
    throw Error(ErrorCode::invalid_argument, "output file name " + name + " is empty or holds control characters");
  }
}

// --- the in-place journal -----------------------------------------------------------------------

struct JournalEntry {
  std::string temporary;
  std::string final_name;
  bool had_previous = false;
};

struct Journal {
  std::vector<JournalEntry> entries;
  std::vector<std::string> stale;
  bool complete = false;   // the "end" line was written: the journal is valid
  bool committed = false;  // the commit point was reached
};

std::string journal_text(const Journal& j) {
  std::string text = "quicksave-journal 1\n";
  for (const auto& e : j.entries) text += "rename\t" + e.temporary + "\t" + e.final_name + "\t" + (e.had_previous ? "1" : "0") + "\n";
  for (const auto& s : j.stale) text += "remove\t" + s + "\n";
  text += "end\t" + std::to_string(j.entries.size() + j.stale.size()) + "\n";
  return text;
}

Journal read_journal(const fs::path& path) {
  Journal j;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line) || line != "quicksave-journal 1") return j;
  std::size_t count = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, '\t');) fields.push_back(f);
    if (fields.size() == 4 && fields[0] == "rename") {
      j.entries.push_back(JournalEntry{fields[1], fields[2], fields[3] == "1"});
      ++count;
    } else if (fields.size() == 2 && fields[0] == "remove") {
      j.stale.push_back(fields[1]);
      ++count;
    } else if (fields.size() == 2 && fields[0] == "end") {
      j.complete = fields[1] == std::to_string(count);
    } else if (fields.size() == 1 && fields[0] == "committed" && j.complete) {
      j.committed = true;
    } else {
      break;
    }
  }
  return j;
}

std::string backup_name(const std::string& tag, const std::string& final_name) { return tag + ".old." + final_name; }

void remove_if_exists(IoBackend& io, const fs::path& p) {
  if (exists_no_follow(p)) io.remove(p);
}

// Step 7: the commit point has been passed; remove backups, stale files and the journal. Each
// step is best effort (the new checkpoint is already complete and durable); failures are
// reported in `warnings` and whatever is left is hidden and removed by a later recover().
void finish_committed(IoBackend& io, const fs::path& target, const std::string& tag, const Journal& j,
                      const fs::path& journal_path, std::vector<std::string>* removed, std::vector<std::string>* warnings) {
  const auto attempt = [&](auto&& step) {
    try {
      step();
    } catch (const std::exception& e) {
      if (warnings) warnings->push_back(e.what());
    }
  };
  for (const auto& e : j.entries) attempt([&] { remove_if_exists(io, target / backup_name(tag, e.final_name)); });
  for (const auto& s : j.stale) {
    attempt([&] {
      if (!exists_no_follow(target / s)) return;
      io.remove(target / s);
      if (removed) removed->push_back(s);
    });
  }
  attempt([&] { io.sync_directory(target); });
  attempt([&] { remove_if_exists(io, journal_path); });
}

// Restores the state before step 4 from a journal that has no commit mark.
void roll_back(IoBackend& io, const fs::path& target, const std::string& tag, const Journal& j, const fs::path& journal_path) {
  for (auto it = j.entries.rbegin(); it != j.entries.rend(); ++it) {
    const fs::path final_path = target / it->final_name;
    const fs::path backup = target / backup_name(tag, it->final_name);
    if (it->had_previous) {
      // Puts the old file back atomically. When backup and final are still the same inode (the
      // crash came between link and rename), rename() does nothing, so remove the backup after.
      if (exists_no_follow(backup)) io.rename(backup, final_path);
      remove_if_exists(io, backup);
    } else if (!exists_no_follow(target / it->temporary) && exists_no_follow(final_path)) {
      io.remove(final_path);  // our rename happened; nothing was there before
    }
    remove_if_exists(io, target / it->temporary);
  }
  io.sync_directory(target);
  remove_if_exists(io, journal_path);
}

std::string parent_staging_prefix(const fs::path& target) { return "." + target.filename().string() + kTagPrefix.data(); }

// Absolute, normalised, without a trailing separator ("ckpt/" and "ckpt" are the same folder).
fs::path normalized_target(const fs::path& target) {
  fs::path p = fs::absolute(target).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

}  // namespace

const char* to_string(CommitMode mode) {
  switch (mode) {
    case CommitMode::fresh: return "fresh";
    case CommitMode::exchange: return "exchange";
    case CommitMode::in_place: return "in_place";
  }
  return "unknown";
}

bool is_pattern_output(const std::string& name, const std::string& pattern) {
  // The reference's clean-up regex, pattern.format(suffix=r"(-\d{5}-of-\d{5})?") + r"(\.index\.json)?",
  // but matched against the whole name with the pattern's text taken literally (the reference
  // matches a prefix and leaves '.' unescaped, so it deletes model.safetensors.old).
  const std::string marker = "\x01";
  const std::string shape = format_filename_pattern(pattern, marker);
  const auto at = shape.find(marker);
  std::string base = name;
  if (base.ends_with(".index.json")) base.resize(base.size() - std::string(".index.json").size());
  if (at == std::string::npos) return base == shape;
  const std::string before = shape.substr(0, at);
  const std::string after = shape.substr(at + marker.size());
  if (base.size() < before.size() + after.size() || base.compare(0, before.size(), before) != 0 ||
      base.compare(base.size() - after.size(), after.size(), after) != 0) {
    return false;
  }
  static const std::regex shard_suffix("(-\\d{5,}-of-\\d{5,})?");
  return std::regex_match(base.substr(before.size(), base.size() - before.size() - after.size()), shard_suffix);
}

Commit::Commit(IoBackend& io, fs::path target, std::string pattern, std::vector<std::string> outputs, bool is_main_process)
    : io_(&io),
      target_(std::move(target)),
      pattern_(std::move(pattern)),
      outputs_(std::move(outputs)),
      is_main_process_(is_main_process),
      tag_(make_tag()) {}

Commit::Commit(Commit&& other) noexcept
    : io_(other.io_),
      target_(std::move(other.target_)),
      pattern_(std::move(other.pattern_)),
      outputs_(std::move(other.outputs_)),
      is_main_process_(other.is_main_process_),
      mode_(other.mode_),
      tag_(std::move(other.tag_)),
      staging_dir_(std::move(other.staging_dir_)),
      done_(other.done_) {
  other.done_ = true;
}

Commit::~Commit() { abort(); }

Commit Commit::begin(IoBackend& io, const fs::path& target_in, const std::string& pattern, std::vector<std::string> outputs,
                     bool is_main_process) {
  for (const auto& name : outputs) check_name(name);
  const fs::path target = normalized_target(target_in);
  if (target.filename().empty()) throw Error(ErrorCode::invalid_argument, "cannot save into " + target.string());
  std::error_code ec;
  const auto status = fs::status(target, ec);
  if (status.type() != fs::file_type::not_found && status.type() != fs::file_type::directory) {
    throw Error(ErrorCode::already_exists, "save directory " + target.string() + " exists and is not a directory");
  }
  const bool exists = status.type() == fs::file_type::directory;
  if (!exists) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) throw Error(ErrorCode::io, "mkdir: " + ec.message() + " (dir=" + target.parent_path().string() + ")", ec.value());
  } else {
    recover(io, target);
  }

  Commit commit(io, target, pattern, std::move(outputs), is_main_process);
  if (!exists) {
    commit.mode_ = CommitMode::fresh;
  } else {
    bool only_ours = is_main_process;
    for (const auto& entry : fs::directory_iterator(target)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || !is_pattern_output(name, pattern)) {
        only_ours = false;
        break;
      }
    }
    commit.mode_ = only_ours ? CommitMode::exchange : CommitMode::in_place;
  }
  if (commit.mode_ != CommitMode::in_place) {
    commit.staging_dir_ = target.parent_path() / ("." + target.filename().string() + commit.tag_ + ".tmp");
    io.make_directory(commit.staging_dir_);
  }
  return commit;
}

fs::path StagingLayout::path_of(const std::string& name) const {
  if (mode == CommitMode::in_place) return target / (tag + "." + name);
  return staging_dir / name;
}

std::string StagingLayout::to_string() const {
  // Tab-separated: none of the fields can hold a tab (check_name and absolute paths made here).
  return std::string(io::to_string(mode)) + "\t" + target.string() + "\t" + staging_dir.string() + "\t" + tag;
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
  return layout;
}

CommitResult Commit::publish() {
  if (done_) throw Error(ErrorCode::failed_precondition, "commit of " + target_.string() + " already finished");
  CommitResult result = mode_ == CommitMode::in_place ? publish_in_place() : publish_directory();
  done_ = true;
  return result;
}

CommitResult Commit::publish_directory() {
  io_->sync_directory(staging_dir_);                                     // step 3
  if (mode_ == CommitMode::exchange) {
    try {
      io_->exchange(staging_dir_, target_);                             // step 4 (exchange)
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unavailable) throw;
      // The filesystem cannot swap directories: move the files over in place instead.
      for (const auto& name : outputs_) io_->rename(staging_dir_ / name, target_ / (tag_ + "." + name));
      io_->remove_all(staging_dir_);
      staging_dir_.clear();
      mode_ = CommitMode::in_place;
      return publish_in_place();
    }
  } else {
    io_->rename(staging_dir_, target_);                                  // step 4 (fresh)
  }
  try {
    io_->sync_directory(target_.parent_path());                          // step 5
  } catch (...) {
    // The switch is not known to be durable: undo it so that the failure leaves the previous
    // state, then let abort() remove the staging directory (which holds the new files again).
    try {
      if (mode_ == CommitMode::exchange) io_->exchange(staging_dir_, target_);
      else io_->rename(target_, staging_dir_);
    } catch (...) {
    }
    throw;
  }
  CommitResult result{mode_, {}, std::nullopt};
  if (mode_ == CommitMode::exchange) result.deferred_removal = staging_dir_;  // now the previous checkpoint
  staging_dir_.clear();
  return result;
}

CommitResult Commit::publish_in_place() {
  Journal journal;
  for (const auto& name : outputs_) {
    journal.entries.push_back(JournalEntry{tag_ + "." + name, name, exists_no_follow(target_ / name)});
  }
  if (is_main_process_) {
    for (const auto& entry : fs::directory_iterator(target_)) {
      const std::string name = entry.path().filename().string();
      if (is_pattern_output(name, pattern_) && std::find(outputs_.begin(), outputs_.end(), name) == outputs_.end()) {
        journal.stale.push_back(name);
      }
    }
    std::sort(journal.stale.begin(), journal.stale.end());
  }
  const fs::path journal_path = target_ / (tag_ + ".journal");
  try {
    io_->write_file_durably(journal_path, journal_text(journal));        // step 2
    io_->sync_directory(target_);                                        // step 3
    for (const auto& e : journal.entries) {                              // step 4
      if (e.had_previous) {
        const fs::path backup = target_ / backup_name(tag_, e.final_name);
        try {
          io_->hard_link(target_ / e.final_name, backup);
        } catch (const Error& error) {
          if (error.code() != ErrorCode::unavailable) throw;
          io_->rename(target_ / e.final_name, backup);  // no hard links here: the journal covers the gap
        }
      }
      io_->rename(target_ / e.temporary, target_ / e.final_name);
    }
    io_->sync_directory(target_);                                        // step 5
    io_->write_file_durably(journal_path, journal_text(journal) + "committed\n");  // step 6: the commit point
  } catch (...) {
    try {
      roll_back(*io_, target_, tag_, journal, journal_path);
    } catch (...) {
      // The journal stays; recover() finishes the roll-back once this process is gone.
    }
    throw;
  }
  CommitResult result{CommitMode::in_place, {}, std::nullopt, {}};
  finish_committed(*io_, target_, tag_, journal, journal_path, &result.removed, &result.warnings);  // step 7
  return result;
}

void Commit::abort() noexcept {
  if (done_) return;
  done_ = true;
  try {
    if (!staging_dir_.empty()) {
      io_->remove_all(staging_dir_);
    } else if (mode_ == CommitMode::in_place) {
      for (const auto& name : outputs_) remove_if_exists(*io_, target_ / (tag_ + "." + name));
    }
  } catch (...) {
    // Best effort: recover() removes what is left once this process is gone.
  }
}

const char* to_string(Leftover::Kind kind) {
  switch (kind) {
    case Leftover::Kind::staging_directory: return "staging directory";
    case Leftover::Kind::journal: return "journal";
    case Leftover::Kind::temporary: return "temporary";
    case Leftover::Kind::backup: return "backup";
  }
  return "unknown";
}

std::vector<Leftover> find_leftovers(const fs::path& target_in) {
  std::vector<Leftover> found;
  std::error_code ec;
  const fs::path target = normalized_target(target_in);
  const auto add = [&](const fs::path& path, Leftover::Kind kind, std::string_view tagged_name) {
    Leftover l{.path = path, .kind = kind, .tag = tag_of(tagged_name), .pid = tag_pid(tagged_name)};
    l.process_alive = process_alive(l.pid);
    if (kind == Leftover::Kind::journal) {
      const Journal j = read_journal(path);
      l.journal = j.committed ? Leftover::JournalState::committed
                  : j.complete ? Leftover::JournalState::uncommitted
                               : Leftover::JournalState::incomplete;
    }
    found.push_back(std::move(l));
  };
  // Staging directories of directory-mode saves, beside the target.
  const std::string staging_prefix = parent_staging_prefix(target);
  for (const auto& entry : fs::directory_iterator(target.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(staging_prefix, 0) == 0 && name.ends_with(".tmp")) {
      add(entry.path(), Leftover::Kind::staging_directory, std::string_view(name).substr(staging_prefix.size() - kTagPrefix.size()));
    }
  }
  // In-place temporaries, backups and journals, inside it.
  if (fs::is_directory(target, ec)) {
    for (const auto& entry : fs::directory_iterator(target, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(kTagPrefix, 0) != 0 || tag_pid(name) < 0) continue;
      const auto kind = name.ends_with(".journal")                ? Leftover::Kind::journal
                        : name.find(".old.") != std::string::npos ? Leftover::Kind::backup
                                                                  : Leftover::Kind::temporary;
      add(entry.path(), kind, name);
    }
  }
  std::sort(found.begin(), found.end(), [](const Leftover& a, const Leftover& b) { return std::tie(a.tag, a.path) < std::tie(b.tag, b.path); });
  return found;
}

RecoveryReport recover(IoBackend& io, const fs::path& target_in) {
  RecoveryReport report;
  const fs::path target = normalized_target(target_in);
  const std::vector<Leftover> leftovers = find_leftovers(target);
  // Journals first: they say what the temporaries and backups are for.
  for (const Leftover& l : leftovers) {
    if (l.process_alive) continue;  // a save still running: never touch it
    const std::string name = l.path.filename().string();
    if (l.kind == Leftover::Kind::staging_directory) {
      io.remove_all(l.path);
      report.actions.push_back("removed staging directory " + name);
    } else if (l.kind == Leftover::Kind::journal) {
      const Journal journal = read_journal(l.path);
      if (l.journal == Leftover::JournalState::committed) {
        finish_committed(io, target, l.tag, journal, l.path, nullptr, nullptr);
        report.actions.push_back("rolled forward the interrupted switch-over " + name);
      } else if (l.journal == Leftover::JournalState::uncommitted) {
        roll_back(io, target, l.tag, journal, l.path);
        report.actions.push_back("rolled back the interrupted switch-over " + name);
      } else {
        io.remove(l.path);  // torn journal: the switch never started
        report.actions.push_back("removed incomplete journal " + name);
      }
    }
  }
  // Temporaries of dead processes without a journal: the switch never started. A backup without
  // its journal cannot exist (the journal is removed last); it stays visible to the user.
  for (const Leftover& l : leftovers) {
    if (l.process_alive || l.kind != Leftover::Kind::temporary) continue;
    if (!exists_no_follow(l.path)) continue;  // a roll-back above already removed it
    io.remove(l.path);
    report.actions.push_back("removed temporary " + l.path.filename().string());
  }
  if (report.changed() && fs::is_directory(target)) io.sync_directory(target);
  return report;
}

}  // namespace quicksave::io
