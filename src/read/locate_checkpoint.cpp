// Where a checkpoint folder's files are, by huggingface_hub's load_torch_model rules (spec §6),
// seen through the folder's read-only view: a crashed save's temporaries are hidden, and files
// the journal says hold the committed bytes are read in place of their final names.
#include "read/locate_checkpoint.hpp"

#include <vector>

#include "commit/file_system.hpp"
#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace read {
namespace {

namespace fs = std::filesystem;

std::optional<fs::path> visible_file(const commit::CheckpointView& view, const std::string& name) {
  if (!view.visible(name)) return std::nullopt;
  const fs::path path = view.path_of(name);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  return path;
}

}  // namespace

CheckpointFiles locate_checkpoint(const commit::CheckpointView& view, bool safe, const std::optional<std::string>& filename_pattern) {
  const fs::path& dir = view.directory;
  CheckpointFiles found;
  // 1. The pattern: the caller's, else the safetensors one, else (safe=False and no safetensors
  //    index) the pickle one.
  found.pattern = filename_pattern.value_or(std::string(kSafetensorsPattern));
  if (!filename_pattern && !safe && !visible_file(view, index_filename(kSafetensorsPattern))) {
    found.pattern = std::string(kPytorchPattern);
  }
  // 2. That pattern's index: a sharded checkpoint.
  if (const auto index = visible_file(view, index_filename(found.pattern))) {
    found.index = *index;
    return found;
  }
  // 3. Else the one file with the extension `safe` selects. The reference globs by extension
  //    alone, ignoring filename_pattern; dot files (temporaries) never match.
  const std::string extension = safe ? ".safetensors" : ".bin";
  std::vector<fs::path> matches;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > extension.size() && name.front() != '.' && name.ends_with(extension) && view.visible(name)) {
      matches.push_back(view.path_of(name));
    }
  }
  if (matches.size() != 1) {
    throw Error(ErrorCode::not_found, "Directory '" + dir.string() +
                                          "' does not contain a valid checkpoint. Expected either a sharded checkpoint with an "
                                          "index file, or a single model file.");
  }
  found.single = matches.front();
  return found;
}

}  // namespace read

CheckpointFiles locate_checkpoint(const std::filesystem::path& directory, bool safe, const std::optional<std::string>& filename_pattern) {
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec)) {
    throw Error(ErrorCode::not_found, "Checkpoint directory " + directory.string() + " does not exist", ENOENT);
  }
  auto file_system = commit::make_posix_file_system();
  return read::locate_checkpoint(commit::read_view(*file_system, directory), safe, filename_pattern);
}

}  // namespace quicksave
