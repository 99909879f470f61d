// Recovery and the read-only view (recovery.hpp); the protocol they undo or finish is at the top
// of commit.cpp. Both start from the same survey of the folder (survey()), so a load reads
// exactly the checkpoint that recovery would leave.
#include "commit/recovery.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <tuple>

#include "commit/commit.hpp"
#include "commit/in_place_switch.hpp"
#include "commit/journal.hpp"
#include "commit/names.hpp"
#include "quicksave/error.hpp"

namespace quicksave::commit {
namespace {

// Everything one save (one tag) left inside the target.
struct SaveRemains {
  std::string tag;
  std::optional<Journal> journal;    // decoded, valid
  std::string journal_problem;       // set when a journal exists but is corrupt
  bool has_journal_file = false;
  bool has_mark = false;             // the mark exists and matches the journal
  std::vector<std::string> temporaries, backups, drafts;
};

struct Survey {
  std::vector<fs::path> staging_directories;
  std::map<std::string, SaveRemains> saves;  // by tag
};

Survey survey(FileSystem& fs, const fs::path& target) {
  Survey s;
  const std::string target_name = target.filename().string();
  for (const DirEntry& entry : fs.list(target.parent_path())) {
    if (entry.type == EntryType::directory && staging_directory_tag(entry.name, target_name)) {
      s.staging_directories.push_back(target.parent_path() / entry.name);
    }
  }
  std::sort(s.staging_directories.begin(), s.staging_directories.end());
  if (fs.type_of(target) != EntryType::directory) return s;
  std::map<std::string, std::string> mark_texts;
  for (const DirEntry& entry : fs.list(target)) {
    if (entry.type != EntryType::file) continue;  // the protocol makes only regular files in here
    const auto name = parse_protocol_name(entry.name);
    if (!name) continue;
    SaveRemains& remains = s.saves[name->tag];
    remains.tag = name->tag;
    using Kind = ProtocolName::Kind;
    switch (name->kind) {
      case Kind::temporary: remains.temporaries.push_back(entry.name); break;
      case Kind::backup: remains.backups.push_back(entry.name); break;
      case Kind::journal_draft:
      case Kind::commit_mark_draft: remains.drafts.push_back(entry.name); break;
      case Kind::journal: remains.has_journal_file = true; break;
      case Kind::commit_mark: mark_texts[name->tag] = entry.name; break;
    }
  }
  for (auto& [tag, remains] : s.saves) {
    if (!remains.has_journal_file) {
      remains.has_mark = mark_texts.contains(tag);  // an orphan mark: the end of a roll-forward
      continue;
    }
    try {
      const std::string text = fs.read_small_file(target / journal_name(tag), kMaxJournalBytes);
      remains.journal = decode_journal(text, tag);
      if (mark_texts.contains(tag)) {
        const std::string mark = fs.read_small_file(target / commit_mark_name(tag), 4096);
        if (!commit_mark_matches(mark, text)) throw Error(ErrorCode::corrupt, "its commit mark does not match it");
        remains.has_mark = true;
      }
    } catch (const Error& e) {
      remains.journal.reset();
      remains.journal_problem = e.what();
    }
  }
  return s;
}

std::string journal_label(const std::string& tag) { return journal_name(tag); }

}  // namespace

const char* to_string(Leftover::Kind kind) {
  switch (kind) {
    case Leftover::Kind::staging_directory: return "staging directory";
    case Leftover::Kind::journal: return "journal";
    case Leftover::Kind::temporary: return "temporary";
    case Leftover::Kind::backup: return "backup";
    case Leftover::Kind::commit_mark: return "commit mark";
    case Leftover::Kind::draft: return "draft";
  }
  return "unknown";
}

std::vector<Leftover> find_leftovers(FileSystem& fs, const fs::path& target_in) {
  const fs::path target = normalized_target(target_in);
  const Survey s = survey(fs, target);
  std::vector<Leftover> found;
  for (const auto& dir : s.staging_directories) {
    const std::string name = dir.filename().string();
    found.push_back(Leftover{.path = dir, .kind = Leftover::Kind::staging_directory,
                             .tag = staging_directory_tag(name, target.filename().string()).value_or("")});
  }
  for (const auto& [tag, r] : s.saves) {
    const auto add = [&](const std::string& name, Leftover::Kind kind) {
      found.push_back(Leftover{.path = target / name, .kind = kind, .tag = tag});
    };
    if (r.has_journal_file) {
      Leftover l{.path = target / journal_name(tag), .kind = Leftover::Kind::journal, .tag = tag};
      if (!r.journal) {
        l.journal = Leftover::JournalState::corrupt;
        l.detail = r.journal_problem;
      } else {
        l.journal = r.has_mark ? Leftover::JournalState::committed : Leftover::JournalState::uncommitted;
        l.detail = r.journal->writer;
      }
      found.push_back(std::move(l));
    }
    if (r.has_mark) add(commit_mark_name(tag), Leftover::Kind::commit_mark);
    for (const auto& n : r.temporaries) add(n, Leftover::Kind::temporary);
    for (const auto& n : r.backups) add(n, Leftover::Kind::backup);
    for (const auto& n : r.drafts) add(n, Leftover::Kind::draft);
  }
  std::sort(found.begin(), found.end(), [](const Leftover& a, const Leftover& b) { return std::tie(a.tag, a.path) < std::tie(b.tag, b.path); });
  return found;
}

WriterStatus writer_status(FileSystem& fs, const fs::path& target_in) {
  const fs::path target = normalized_target(target_in);
  const auto holder = fs.lock_holder(target.parent_path() / lock_file_name(target.filename().string()));
  return WriterStatus{holder.has_value(), holder.value_or("")};
}

RecoveryReport recover_locked(FileSystem& fs, const fs::path& target_in) {
  const fs::path target = normalized_target(target_in);
  RecoveryReport report;
  const Survey s = survey(fs, target);
  for (const auto& dir : s.staging_directories) {
    fs.remove_all(dir);
    report.actions.push_back("removed staging directory " + dir.filename().string());
  }
  const auto remove_all_of = [&](const std::vector<std::string>& names, const char* what) {
    for (const auto& name : names) {
      if (fs.type_of(target / name) == EntryType::none) continue;  // a roll-back already removed it
      fs.remove(target / name);
      report.actions.push_back(std::string("removed ") + what + " " + name);
    }
  };
  bool changed_target = false;
  for (const auto& [tag, r] : s.saves) {
    if (r.has_journal_file && !r.journal) {
      report.left_alone.push_back("corrupt journal " + journal_label(tag) + " and the files of its save: " + r.journal_problem);
      continue;
    }
    changed_target = true;
    if (r.journal && r.has_mark) {
      std::vector<std::string> warnings;
      roll_forward(fs, target, *r.journal, nullptr, &warnings);
      for (const auto& w : warnings) report.left_alone.push_back("rolling forward " + journal_label(tag) + ": " + w);
      report.actions.push_back("rolled forward the interrupted switch " + journal_label(tag) + " (written by " + r.journal->writer + ")");
      remove_all_of(r.temporaries, "temporary");
      remove_all_of(r.drafts, "draft");
    } else if (r.journal) {
      roll_back(fs, target, *r.journal);
      report.actions.push_back("rolled back the interrupted switch " + journal_label(tag) + " (written by " + r.journal->writer + ")");
      remove_all_of(r.temporaries, "temporary");
      remove_all_of(r.drafts, "draft");
      for (const auto& b : r.backups) {
        if (fs.type_of(target / b) != EntryType::none) report.left_alone.push_back("backup " + b + " that its journal does not list");
      }
    } else {
      // No journal: the switch never started (temporaries, drafts) or has finished (a mark).
      remove_all_of(r.temporaries, "temporary");
      remove_all_of(r.drafts, "draft");
      if (r.has_mark) remove_all_of({commit_mark_name(tag)}, "commit mark");
      for (const auto& b : r.backups) report.left_alone.push_back("backup " + b + " without its journal");
    }
  }
  if (changed_target && fs.type_of(target) == EntryType::directory) fs.sync_directory(target);
  if (!s.staging_directories.empty()) fs.sync_directory(target.parent_path());
  return report;
}

RecoveryReport recover(FileSystem& fs, const fs::path& target_in) {
  const fs::path target = normalized_target(target_in);
  if (fs.type_of(target.parent_path()) != EntryType::directory) return {};
  const fs::path lock_path = target.parent_path() / lock_file_name(target.filename().string());
  FileLock lock = fs.lock(lock_path, "recovery " + process_identity(), /*wait=*/false);
  if (!lock.held()) {
    RecoveryReport report;
    const auto holder = fs.lock_holder(lock_path);
    report.left_alone.push_back("everything: a save holds " + target.string() + " (" + holder.value_or("holder unknown") + ")");
    return report;
  }
  return recover_locked(fs, target);
}

fs::path CheckpointView::path_of(const std::string& name) const {
  const auto it = redirected.find(name);
  return directory / (it == redirected.end() ? name : it->second);
}

CheckpointView read_view(FileSystem& fs, const fs::path& directory) {
  CheckpointView view;
  view.directory = directory;
  const Survey s = survey(fs, normalized_target(directory));
  for (const auto& [tag, r] : s.saves) {
    if (r.has_journal_file && !r.journal) {
      view.notes.push_back("ignored the corrupt journal " + journal_label(tag) + ": " + r.journal_problem);
      continue;
    }
    if (!r.journal) continue;
    if (r.has_mark) {
      // Committed: the new files are in place; the stale ones are no longer part of it.
      for (const auto& stale : r.journal->stale) {
        if (fs.file_id(directory / stale.name) == stale.inode) view.hidden.insert(stale.name);
      }
      view.notes.push_back("read the committed switch " + journal_label(tag) + " (not yet finished)");
    } else {
      // Not committed: the previous files, wherever the interrupted switch left them.
      for (const auto& e : r.journal->entries) {
        const std::string backup = backup_name(tag, e.final_name);
        if (e.had_previous && fs.type_of(directory / backup) == EntryType::file) {
          view.redirected[e.final_name] = backup;
        } else if (!e.had_previous) {
          view.hidden.insert(e.final_name);
        }
      }
      view.notes.push_back("read the previous checkpoint: the switch " + journal_label(tag) + " was not committed");
    }
  }
  return view;
}

}  // namespace quicksave::commit
