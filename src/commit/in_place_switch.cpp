#include "commit/in_place_switch.hpp"

#include "commit/names.hpp"
#include "quicksave/error.hpp"

namespace quicksave::commit {
namespace {

bool exists(FileSystem& fs, const fs::path& p) { return fs.type_of(p) != EntryType::none; }

void remove_if_exists(FileSystem& fs, const fs::path& p) {
  if (exists(fs, p)) fs.remove(p);
}

}  // namespace

void roll_back(FileSystem& fs, const fs::path& target, const Journal& j) {
  for (auto it = j.entries.rbegin(); it != j.entries.rend(); ++it) {
    const fs::path final_path = target / it->final_name;
    const fs::path backup = target / backup_name(j.tag, it->final_name);
    const fs::path temporary = target / temporary_name(j.tag, it->final_name);
    if (it->had_previous) {
      // Puts the old file back atomically. When backup and final are still the same inode (the
      // crash came between link and rename), rename() does nothing, so the backup is removed after.
      if (exists(fs, backup)) fs.rename(backup, final_path);
      remove_if_exists(fs, backup);
    } else if (!exists(fs, temporary) && fs.file_id(final_path) == it->inode) {
      fs.remove(final_path);  // our rename happened; nothing was there before
    }
    remove_if_exists(fs, temporary);
  }
  fs.sync_directory(target);
  remove_if_exists(fs, target / commit_mark_draft_name(j.tag));
  fs.remove(target / journal_name(j.tag));
  fs.sync_directory(target);
}

void roll_forward(FileSystem& fs, const fs::path& target, const Journal& j, std::vector<std::string>* removed,
                  std::vector<std::string>* warnings) {
  bool ok = true;
  const auto attempt = [&](auto&& step) {
    try {
      step();
    } catch (const std::exception& e) {
      ok = false;
      if (warnings) warnings->push_back(e.what());
    }
  };
  for (const auto& e : j.entries) attempt([&] { remove_if_exists(fs, target / backup_name(j.tag, e.final_name)); });
  for (const auto& s : j.stale) {
    attempt([&] {
      // Only the very file the save listed: a journal never deletes a file it did not see.
      if (fs.file_id(target / s.name) != s.inode) return;
      fs.remove(target / s.name);
      if (removed) removed->push_back(s.name);
    });
  }
  attempt([&] { fs.sync_directory(target); });
  // The journal goes only once everything it lists is gone (a later recovery re-reads it), and
  // before the mark (a journal left without its mark would be rolled back).
  if (!ok) return;
  attempt([&] {
    fs.remove(target / journal_name(j.tag));
    fs.sync_directory(target);
    fs.remove(target / commit_mark_name(j.tag));
  });
}

}  // namespace quicksave::commit
