// Finding a checkpoint's files and the leftovers of interrupted saves (read-only).
//
// The leftover names mirror io/commit.cpp's protocol: every temporary carries the tag
// ".qs-<pid>-<hex>"; in-place saves put "<tag>.<name>" temporaries, "<tag>.old.<name>" backups
// and a "<tag>.journal" inside the folder, directory-mode saves a staging directory
// ".<folder>.qs-<pid>-<hex>.tmp" beside it. Recovery (io::recover) is the only code that acts
// on them; this file only reports.
#include "cli/checkpoint_files.hpp"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <fstream>
#include <map>
#include <tuple>

#include "quicksave/error.hpp"

namespace quicksave::cli {
namespace {

constexpr std::string_view kTag = ".qs-";
constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
constexpr std::string_view kSafetensors = ".safetensors";

bool ends_with(std::string_view s, std::string_view suffix) { return s.size() >= suffix.size() && s.ends_with(suffix); }

// The pid after ".qs-" in `name`, or -1 when `name` has no well-formed tag.
long tag_pid(std::string_view name) {
  const auto at = name.find(kTag);
  if (at == std::string_view::npos) return -1;
  std::size_t i = at + kTag.size();
  long pid = 0;
  const std::size_t digits_start = i;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && i - digits_start < 10) pid = pid * 10 + (name[i++] - '0');
  return (i > digits_start && i < name.size() && name[i] == '-') ? pid : -1;
}

// The tag ".qs-<pid>-<hex>" inside `name` (up to the next '.'), or empty.
std::string tag_of(std::string_view name) {
  const auto at = name.find(kTag);
  if (at == std::string_view::npos || tag_pid(name) < 0) return {};
  const auto end = name.find('.', at + 1);
  return std::string(name.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at));
}

bool alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// A journal's state from its last lines: "end\t<n>" makes it complete, a following "committed"
// line marks the commit point (io/commit.cpp, steps B.2 and B.6).
std::string journal_detail(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  bool complete = false;
  bool committed = false;
  while (std::getline(in, line)) {
    if (line.rfind("end\t", 0) == 0) complete = true;
    if (line == "committed" && complete) committed = true;
  }
  if (committed) return "the new files were published; recovery finishes the clean-up (rolls forward)";
  if (complete) return "the switch-over was not committed; recovery restores the previous files (rolls back)";
  return "the journal is incomplete: the switch-over never started; recovery removes it";
}

}  // namespace

std::string pattern_of_index(const std::string& index_name) {
  if (!ends_with(index_name, kIndexSuffix)) {
    throw Error(ErrorCode::invalid_argument,
                index_name + " is not a safetensors index (expected a name ending in " + std::string(kIndexSuffix) + ")");
  }
  return index_name.substr(0, index_name.size() - kIndexSuffix.size()) + "{suffix}.safetensors";
}

CheckpointLocation locate_checkpoint(const fs::path& path) {
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
  if (fs::exists(path / "model.safetensors.index.json")) {
    location.index_file = path / "model.safetensors.index.json";
    location.pattern = "model{suffix}.safetensors";
    return location;
  }
  if (fs::exists(path / "model.safetensors")) {
    location.single_file = path / "model.safetensors";
    location.pattern = "model{suffix}.safetensors";
    return location;
  }
  std::vector<std::string> indexes, files;
  for (const auto& entry : fs::directory_iterator(path)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind('.', 0) == 0 || !entry.is_regular_file()) continue;  // hidden: temporaries of a save
    if (ends_with(name, kIndexSuffix)) indexes.push_back(name);
    else if (ends_with(name, kSafetensors)) files.push_back(name);
  }
  std::sort(indexes.begin(), indexes.end());
  std::sort(files.begin(), files.end());
  if (indexes.size() == 1) {
    location.index_file = path / indexes.front();
    location.pattern = pattern_of_index(indexes.front());
    return location;
  }
  if (indexes.size() > 1) {
    throw Error(ErrorCode::invalid_argument, path.string() + " holds several indexes (" + indexes[0] + ", " + indexes[1] +
                                                 ", ...): name the one to use");
  }
  if (files.size() == 1) {
    location.single_file = path / files.front();
    location.pattern = files.front();
    return location;
  }
  if (files.size() > 1) {
    throw Error(ErrorCode::invalid_argument, path.string() + " holds " + std::to_string(files.size()) +
                                                 " .safetensors files but no index: name the file to use");
  }
  throw Error(ErrorCode::not_found, "no safetensors checkpoint in " + path.string() +
                                        " (no model.safetensors, no *.safetensors.index.json)");
}

std::vector<Leftover> find_leftovers(const fs::path& target_in) {
  std::vector<Leftover> found;
  std::error_code ec;
  const fs::path target = fs::absolute(target_in, ec).lexically_normal();
  fs::path folder = target;
  if (!folder.has_filename()) folder = folder.parent_path();  // "dir/" normalises to a trailing separator
  const auto add = [&](const fs::path& path, std::string kind) {
    const std::string name = path.filename().string();
    Leftover l{.path = path, .kind = std::move(kind), .tag = tag_of(name), .pid = tag_pid(name)};
    l.process_alive = alive(l.pid);
    found.push_back(std::move(l));
  };
  const std::string staging_prefix = "." + folder.filename().string() + std::string(kTag);
  for (const auto& entry : fs::directory_iterator(folder.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(staging_prefix, 0) == 0 && ends_with(name, ".tmp")) add(entry.path(), "staging directory");
  }
  if (fs::is_directory(folder, ec)) {
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(kTag, 0) != 0 || tag_pid(name) < 0) continue;
      add(entry.path(), ends_with(name, ".journal") ? "journal" : name.find(".old.") != std::string::npos ? "backup" : "temporary");
    }
  }
  std::sort(found.begin(), found.end(), [](const Leftover& a, const Leftover& b) {
    return std::tie(a.tag, a.path) < std::tie(b.tag, b.path);
  });
  return found;
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
      by_kind[leftovers[k].kind].push_back(leftovers[k].path.filename().string());
      if (leftovers[k].kind == "journal") journal = &leftovers[k];
    }
    std::string what;
    for (const auto& [kind, names] : by_kind) {
      if (!what.empty()) what += ", ";
      const std::string plural = kind == "staging directory" ? "staging directories" : kind + "s";
      what += names.size() == 1 ? kind + " " + names.front()
                                : std::to_string(names.size()) + " " + plural + " (" + names.front() + ", ...)";
    }
    std::string consequence;
    if (first.process_alive) {
      consequence = "a save is in progress";
    } else if (journal != nullptr) {
      consequence = journal_detail(journal->path);
    } else if (by_kind.contains("backup")) {
      consequence = "backups without their journal; recovery leaves them for you to inspect";
    } else if (by_kind.contains("staging directory")) {
      consequence = "a save that did not finish (or its replaced previous version); the checkpoint in place is untouched; recovery removes it";
    } else {
      consequence = "files of an unfinished in-place save whose switch-over never started; the checkpoint in place is untouched; recovery removes them";
    }
    const std::string who = first.pid > 0 ? "process " + std::to_string(first.pid) + (first.process_alive ? ", still running" : ", no longer running")
                                          : "unknown process";
    out.push_back({first.tag, first.process_alive, "save " + first.tag + " (" + who + "): " + what + ": " + consequence});
    i = j;
  }
  return out;
}

}  // namespace quicksave::cli
