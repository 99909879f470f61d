// Finding a checkpoint's files, and describing the leftovers of interrupted saves that
// commit::find_leftovers reports (read-only: recovery, commit::recover, is the only code that acts).
#include "read/checkpoint_files.hpp"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <fstream>
#include <map>
#include <tuple>

#include "quicksave/error.hpp"
#include "read/locate_checkpoint.hpp"

namespace quicksave::read {
namespace {

constexpr std::string_view kTag = ".qs-";
constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
constexpr std::string_view kSafetensors = ".safetensors";

bool ends_with(std::string_view s, std::string_view suffix) { return s.size() >= suffix.size() && s.ends_with(suffix); }

std::string journal_detail(const Leftover& journal) {
  switch (journal.journal) {
    case commit::Leftover::JournalState::committed:
      return "the new files were published; loads read them; recovery finishes the clean-up (rolls forward)";
    case commit::Leftover::JournalState::uncommitted:
      return "the switch-over was not committed; loads read the previous files; recovery restores them (rolls back)";
    default: return "the journal is corrupt (" + journal.detail + "); recovery leaves this save's files alone";
  }
}

}  // namespace

std::string pattern_of_index(const std::string& index_name) {
  if (!ends_with(index_name, kIndexSuffix)) {
    throw Error(ErrorCode::invalid_argument,
                index_name + " is not a safetensors index (expected a name ending in " + std::string(kIndexSuffix) + ")");
  }
  return index_name.substr(0, index_name.size() - kIndexSuffix.size()) + "{suffix}.safetensors";
}

CheckpointLocation find_checkpoint(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw Error(ErrorCode::not_found, "No such file or directory: " + path.string(), ENOENT);
  CheckpointLocation location;
  if (fs::is_regular_file(status)) {
    const std::string name = path.filename().string();
    location.directory = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (ends_with(name, ".index.json")) {
      location.pattern = pattern_of_index(name);
      location.index_file = path;
    } else if (ends_with(name, kSafetensors)) {
      location.pattern = name;
      location.single_file = path;
    } else {
      throw Error(ErrorCode::invalid_argument, path.string() + " is neither a .safetensors file nor a safetensors index");
    }
    return location;
  }
  if (!fs::is_directory(status)) throw Error(ErrorCode::invalid_argument, path.string() + " is not a file or a directory");
  location.directory = path;
  // An entry of the index's name that is not a regular file (a FIFO, a device, a folder) is
  // taken as the index so that reading it reports it; loaders would silently look past it.
  const fs::path default_index = path / index_filename(kSafetensorsPattern);
  if (fs::exists(fs::status(default_index, ec)) && !fs::is_regular_file(default_index, ec)) {
    location.index_file = default_index;
    location.pattern = std::string(kSafetensorsPattern);
    return location;
  }
  // A folder: the loaders' rules (read::locate_checkpoint), over the files as they are: the
  // leftovers of an interrupted save are reported on their own, not read through.
  try {
    const CheckpointFiles found = locate_checkpoint(commit::CheckpointView{.directory = path}, true, std::nullopt);
    location.index_file = found.index;
    location.single_file = found.single;
    const bool other_single = found.single && found.single->filename() != "model.safetensors";
    location.pattern = other_single ? found.single->filename().string() : found.pattern;
    return location;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::not_found) throw;
  }
  // Also a folder holding one sharded checkpoint of another pattern (its only index).
  std::vector<std::string> indexes;
  for (const auto& entry : fs::directory_iterator(path)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind('.', 0) == 0 || !entry.is_regular_file()) continue;  // hidden: temporaries of a save
    if (ends_with(name, kIndexSuffix)) indexes.push_back(name);
  }
  if (indexes.size() == 1) {
    location.index_file = path / indexes.front();
    location.pattern = pattern_of_index(indexes.front());
    return location;
  }
  throw Error(ErrorCode::not_found, "no safetensors checkpoint in " + path.string() +
                                        " (no model.safetensors.index.json, not exactly one *.safetensors file or one "
                                        "*.safetensors.index.json)");
}

std::vector<Leftover> find_leftovers(const fs::path& target) {
  auto fs = commit::make_posix_file_system();
  const bool in_progress = commit::writer_status(*fs, target).busy;
  std::vector<Leftover> out;
  for (auto& l : commit::find_leftovers(*fs, target)) {
    Leftover item;
    static_cast<commit::Leftover&>(item) = std::move(l);
    item.save_in_progress = in_progress;
    out.push_back(std::move(item));
  }
  return out;
}

std::vector<SaveLeftovers> describe_leftovers(const std::vector<Leftover>& leftovers) {
  std::vector<SaveLeftovers> out;
  for (std::size_t i = 0; i < leftovers.size();) {
    std::size_t j = i;
    while (j < leftovers.size() && leftovers[j].tag == leftovers[i].tag) ++j;
    const Leftover& first = leftovers[i];
    std::map<std::string, std::vector<std::string>> by_kind;
    const Leftover* journal = nullptr;
    for (std::size_t k = i; k < j; ++k) {
      by_kind[commit::to_string(leftovers[k].kind)].push_back(leftovers[k].path.filename().string());
      if (leftovers[k].kind == commit::Leftover::Kind::journal) journal = &leftovers[k];
    }
    std::string what;
    for (const auto& [kind, names] : by_kind) {
      if (!what.empty()) what += ", ";
      const std::string plural = kind == "staging directory" ? "staging directories" : kind + "s";
      what += names.size() == 1 ? kind + " " + names.front()
                                : std::to_string(names.size()) + " " + plural + " (" + names.front() + ", ...)";
    }
    std::string consequence;
    if (first.save_in_progress) {
      consequence = "a save is in progress (it holds the folder's lock)";
    } else if (journal != nullptr) {
      consequence = journal_detail(*journal);
    } else if (by_kind.contains("backup")) {
      consequence = "backups without their journal; recovery leaves them for you to inspect";
    } else if (by_kind.contains("commit mark") && by_kind.size() == 1) {
      consequence = "the last file of a finished switch-over; the checkpoint in place is the new one; recovery removes it";
    } else if (by_kind.contains("staging directory")) {
      consequence = "a save that did not finish (or its replaced previous version); the checkpoint in place is untouched; recovery removes it";
    } else {
      consequence = "files of an unfinished in-place save whose switch-over never started; the checkpoint in place is untouched; recovery removes them";
    }
    const std::string who = journal != nullptr && journal->journal != commit::Leftover::JournalState::corrupt
                                ? " (written by " + journal->detail + ")"
                                : "";
    out.push_back({first.tag, first.save_in_progress, "save " + first.tag + who + ": " + what + ": " + consequence});
    i = j;
  }
  return out;
}

}  // namespace quicksave::read
