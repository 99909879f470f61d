// Where a checkpoint's files are when a user names it (verify, inspect): a safetensors file, an
// index file or a checkpoint folder. Also finds and describes what an interrupted save left
// behind, without changing anything (recovery, commit::recover, is the only code that acts).
#pragma once

#include "commit/recovery.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace quicksave::read {

namespace fs = std::filesystem;

struct CheckpointLocation {
  fs::path directory;                 // the folder holding the files
  std::optional<fs::path> index_file; // sharded checkpoint: its index
  std::optional<fs::path> single_file;// one-file checkpoint
  std::string pattern;                // e.g. "model{suffix}.safetensors"
};

// A file is taken as named (a .safetensors file or a *.safetensors.index.json). A folder is
// searched by the loaders' rules (quicksave::locate_checkpoint: model.safetensors.index.json, else
// the only *.safetensors), then for the only *.safetensors.index.json. Throws Error(not_found)
// when there is no checkpoint, (invalid_argument) when a file is not a safetensors checkpoint.
CheckpointLocation find_checkpoint(const fs::path& path);

// "model{suffix}.safetensors" for "model.safetensors.index.json" (and X for X.safetensors.index.json).
std::string pattern_of_index(const std::string& index_name);

// Leftovers of interrupted saves come from the commit protocol itself (commit::find_leftovers),
// so the tool never has its own idea of temporary names or journal lines. A save holding the
// folder's writer lock now makes them the files of a save in progress, not of a crash.
struct Leftover : commit::Leftover {
  bool save_in_progress = false;
};
std::vector<Leftover> find_leftovers(const fs::path& target);

// One line per save that left something, e.g. "interrupted save .qs-1f2e… (written by host=a
// boot=… pid=12): 5 temporaries (.qs-….model-00001-of-00005.safetensors, ...): <what recovery
// will do>".
struct SaveLeftovers {
  std::string tag;
  bool save_in_progress = false;
  std::string description;
};
std::vector<SaveLeftovers> describe_leftovers(const std::vector<Leftover>& leftovers);

}  // namespace quicksave::read
