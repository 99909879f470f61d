// LoadSource::open: the files of a safetensors checkpoint found by the Hugging Face rules
// (read::locate_checkpoint over the folder's view, so a crashed save's leftovers are never read
// as the checkpoint), every header read and validated against its file's size (a truncated or
// padded file is refused here, before any tensor byte is read), every index entry found in its
// shard, and for verified sources the manifest matched against each file's size and header.
#include "load/load_source.hpp"

#include <algorithm>
#include <set>
#include <string_view>

#include "commit/names.hpp"
#include "commit/recovery.hpp"
#include "format/checksum.hpp"
#include "io/regular_file.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/reader.hpp"
#include "read/locate_checkpoint.hpp"
#include "read/manifest_check.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;

// The file's header, validated against its size; `prefix` receives its first 8 + N bytes.
Header read_header(const io::RegularFile& file, std::string& prefix) {
  const auto fail = [&](const std::string& message) {
    return Error(ErrorCode::corrupt, "Error while deserializing header: " + message + " (file=" + file.path().string() + ")");
  };
  const std::uint64_t size = file.size();
  std::byte first8[8] = {};
  if (size >= 8) file.read_exact(first8, 8, 0);
  auto length = check_header_length(std::span<const std::byte>(first8, size >= 8 ? 8 : 0), size);
  if (auto* problem = std::get_if<HeaderProblem>(&length)) throw fail(problem->message);
  const auto n = std::get<std::uint64_t>(length);
  prefix = file.read_string(0, static_cast<std::size_t>(8 + n));
  auto parsed = check_header(std::string_view(prefix).substr(8), size);
  if (auto* problem = std::get_if<HeaderProblem>(&parsed)) throw fail(problem->message);
  Header header = std::move(std::get<Header>(parsed));
  // The reference's loaders refuse files whose metadata says another framework wrote them.
  if (header.metadata) {
    const auto& metadata = *header.metadata;
    const auto format = std::find_if(metadata.begin(), metadata.end(), [](const auto& kv) { return kv.first == "format"; });
    if (format == metadata.end() || (format->second != "pt" && format->second != "mlx")) {
      throw Error(ErrorCode::corrupt, "The safetensors archive passed at " + file.path().string() +
                                          " does not contain the valid metadata. Make sure you save your model with the "
                                          "`save_torch_model` method.");
    }
  }
  return header;
}

format::Manifest read_manifest(commit::FileSystem& file_system, const commit::CheckpointView& view, const std::string& pattern,
                               const fs::path& folder) {
  const std::string name = commit::manifest_name(pattern);
  if (!view.visible(name) || file_system.type_of(view.path_of(name)) == commit::EntryType::none) {
    throw Error(ErrorCode::not_found, "verify: " + folder.string() + " has no checksum manifest (" + name + ")");
  }
  try {
    return format::parse_manifest_json(file_system.read_small_file(view.path_of(name), format::kMaxManifestBytes));
  } catch (const Error& e) {
    throw Error(ErrorCode::corrupt, "verify: " + name + ": " + e.what());
  }
}

}  // namespace

LoadSource LoadSource::open(const fs::path& path, const LoadSourceOptions& options) {
  auto state = std::make_shared<State>();
  auto file_system = commit::make_posix_file_system();
  std::error_code ec;
  const bool is_directory = fs::is_directory(path, ec);
  if (!is_directory && !fs::exists(path, ec)) throw Error(ErrorCode::not_found, "Checkpoint path " + path.string() + " does not exist");
  const fs::path folder = is_directory ? path : path.parent_path();
  const commit::CheckpointView view = commit::read_view(*file_system, folder.empty() ? fs::path(".") : folder);
  std::string pattern = options.filename_pattern.value_or(std::string(kSafetensorsPattern));

  std::optional<ShardIndex> index;
  if (!is_directory) {
    state->files.push_back(State::File{path, path.filename().string()});
  } else {
    const CheckpointFiles found = read::locate_checkpoint(view, /*safe=*/true, options.filename_pattern);
    pattern = found.pattern;
    if (found.single) {
      state->files.push_back(State::File{*found.single, found.single->filename().string()});
    } else {
      index = read_index_file(*found.index);
      std::set<std::string> seen, needed;
      for (const auto& [name, file] : index->weight_map) {
        if (seen.insert(file).second) validate_shard_filename(file, pattern, found.index->string());
        if (options.key_filter && !options.key_filter(name)) continue;
        if (needed.insert(file).second) state->files.push_back(State::File{view.path_of(file), file});
      }
    }
  }

  std::vector<std::string> prefixes(state->files.size());
  for (std::size_t f = 0; f < state->files.size(); ++f) {
    auto& file = state->files[f];
    const io::RegularFile opened = io::RegularFile::open(file.path);
    file.size = opened.size();
    file.header = read_header(opened, prefixes[f]);
  }

  const auto add = [&](std::size_t f, const TensorEntry& entry) {
    const auto& file = state->files[f];
    state->by_name.emplace(entry.name, state->tensors.size());
    state->tensors.push_back(CheckpointTensor{entry.name, entry.dtype, {entry.shape.begin(), entry.shape.end()}, file.name, entry.nbytes()});
    state->locations.push_back(State::Location{f, file.header.data_start() + entry.begin});
  };
  if (!index) {
    for (const auto& entry : state->files.front().header.tensors) {
      if (!options.key_filter || options.key_filter(entry.name)) add(0, entry);
    }
  } else {
    std::unordered_map<std::string_view, std::size_t> file_of;
    std::vector<std::unordered_map<std::string_view, const TensorEntry*>> entries(state->files.size());
    for (std::size_t f = 0; f < state->files.size(); ++f) {
      file_of.emplace(state->files[f].name, f);
      for (const auto& entry : state->files[f].header.tensors) entries[f].emplace(entry.name, &entry);
    }
    for (const auto& [name, file] : index->weight_map) {
      if (options.key_filter && !options.key_filter(name)) continue;
      const std::size_t f = file_of.at(file);
      const auto entry = entries[f].find(name);
      // Strict or not: a parameter the index promises must be there, or it would silently keep
      // its old values while the load reports success.
      if (entry == entries[f].end()) throw Error(ErrorCode::corrupt, "the index maps " + name + " to " + file + ", which does not hold it");
      add(f, *entry->second);
    }
  }

  if (options.verify) {
    const format::Manifest manifest = read_manifest(*file_system, view, pattern, folder);
    state->has_manifest = true;
    state->ranges.resize(state->tensors.size());
    for (std::size_t f = 0; f < state->files.size(); ++f) {
      const auto& file = state->files[f];
      const auto entry = std::find_if(manifest.files.begin(), manifest.files.end(), [&](const auto& m) { return m.file == file.name; });
      const auto fail = [&](const std::string& what) { return Error(ErrorCode::corrupt, "verify: " + file.name + ": " + what); };
      if (entry == manifest.files.end()) throw fail("the checksum manifest does not list it");
      if (entry->bytes != file.size) {
        throw fail("holds " + std::to_string(file.size) + " bytes, the manifest says " + std::to_string(entry->bytes));
      }
      if (format::xxh3_64(prefixes[f]) != entry->header_hash) {
        throw fail("its header (bytes [0, " + std::to_string(prefixes[f].size()) + ")) does not match the manifest");
      }
      try {
        read::check_manifest_tiles_header(*entry, file.header);
      } catch (const Error& e) {
        throw fail(std::string("the manifest does not describe its header: ") + e.what());
      }
      for (const auto& tensor : entry->tensors) {
        const auto it = state->by_name.find(tensor.name);
        if (it != state->by_name.end() && state->locations[it->second].file == f) state->ranges[it->second] = tensor.ranges;
      }
    }
  }
  LoadSource source;
  source.state_ = std::move(state);
  return source;
}

const std::vector<CheckpointTensor>& LoadSource::tensors() const { return state_->tensors; }

const CheckpointTensor* LoadSource::find(const std::string& name) const {
  const auto it = state_->by_name.find(name);
  return it == state_->by_name.end() ? nullptr : &state_->tensors[it->second];
}

std::vector<fs::path> LoadSource::files() const {
  std::vector<fs::path> out;
  for (const auto& file : state_->files) out.push_back(file.path);
  return out;
}

bool LoadSource::has_manifest() const { return state_->has_manifest; }

}  // namespace quicksave
