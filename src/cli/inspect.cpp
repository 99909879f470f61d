// `quicksave inspect PATH`: what a checkpoint holds — every tensor (name, dtype, shape, bytes,
// shard), the shards' sizes, totals and metadata — as a table or as JSON. Reads headers only.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "read/checkpoint_files.hpp"
#include "cli/cli.hpp"
#include "cli/text_format.hpp"
#include "quicksave/reader.hpp"

namespace quicksave::cli {

namespace fs = std::filesystem;
namespace {

constexpr const char* kHelp = R"(Usage: quicksave inspect PATH [--json]

Lists a checkpoint's tensors (name, dtype, shape, bytes, shard), its shards with their sizes,
totals and metadata. Only headers are read (fast for any size); `quicksave verify` reads the data.

PATH  a checkpoint folder, its index (*.safetensors.index.json) or one .safetensors file

Options:
  --json   print JSON: {path, kind, index, metadata, shards[], tensors[], total}
  --help   this text

Exit status: 0 success; 1 the checkpoint cannot be read (the reason is printed); 2 usage error.
)";

nlohmann::json meta_json(const MetaValue& v) {
  return std::visit([](const auto& x) -> nlohmann::json {
    using T = std::decay_t<decltype(x)>;
    if constexpr (std::is_same_v<T, std::nullptr_t>) return nullptr;
    else return x;
  }, v);
}

std::string meta_text(const MetaValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  return meta_json(v).dump();
}

struct Shard {
  std::string name;
  SafetensorsFile file;
};

}  // namespace

int run_inspect(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {"json"}, {});
  const fs::path path = args.one_positional("PATH");
  const read::CheckpointLocation location = read::find_checkpoint(path);

  std::optional<ShardIndex> index;
  std::vector<Shard> shards;
  if (location.index_file) {
    index = read_index_file(*location.index_file);
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : index->weight_map) {
      if (!seen.insert(shard).second) continue;
      validate_shard_filename(shard, location.pattern, location.index_file->filename().string());
      shards.push_back({shard, SafetensorsFile::open(location.directory / shard)});
    }
  } else {
    shards.push_back({location.single_file->filename().string(), SafetensorsFile::open(*location.single_file)});
  }
  const std::vector<read::Leftover> leftovers = read::find_leftovers(location.directory);

  std::uint64_t total_bytes = 0, total_params = 0, file_bytes = 0;
  std::size_t total_tensors = 0;
  nlohmann::json tensors_json = nlohmann::json::array(), shards_json = nlohmann::json::array();
  Table tensors({"name", "dtype", "shape", "bytes", "shard"}, {3});
  Table shard_table({"shard", "size", "tensors", "tensor bytes", "metadata"}, {1, 2, 3});
  for (const auto& shard : shards) {
    const Header& h = shard.file.header();
    nlohmann::json shard_meta = nlohmann::json::object();
    std::string shard_meta_text;
    if (h.metadata) {
      for (const auto& [k, v] : *h.metadata) {
        shard_meta[k] = v;
        shard_meta_text += (shard_meta_text.empty() ? "" : ", ") + k + "=" + v;
      }
    }
    shards_json.push_back({{"file", shard.name}, {"bytes", shard.file.file_size()}, {"header_bytes", h.data_start()},
                           {"data_bytes", h.data_bytes()}, {"tensors", h.tensors.size()}, {"metadata", shard_meta}});
    shard_table.add({shard.name, human_bytes(shard.file.file_size()), std::to_string(h.tensors.size()), human_bytes(h.data_bytes()),
                     shard_meta_text});
    file_bytes += shard.file.file_size();
    for (const auto& t : h.tensors) {
      std::uint64_t numel = 1;
      for (auto d : t.shape) numel *= d;
      total_params += numel;
      total_bytes += t.nbytes();
      ++total_tensors;
      tensors_json.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.nbytes()},
                              {"shard", shard.name}, {"data_offsets", {t.begin, t.end}}});
      tensors.add({t.name, std::string(dtype_name(t.dtype)), shape_string(t.shape), human_bytes(t.nbytes()), shard.name});
    }
  }
  // The checkpoint's metadata: the index's (sharded) or the file header's (single file).
  nlohmann::json metadata = nlohmann::json::object();
  std::vector<std::pair<std::string, std::string>> metadata_lines;
  if (index) {
    for (const auto& [k, v] : index->metadata) {
      metadata[k] = meta_json(v);
      metadata_lines.emplace_back(k, meta_text(v));
    }
  } else if (shards.front().file.header().metadata) {
    for (const auto& [k, v] : *shards.front().file.header().metadata) {
      metadata[k] = v;
      metadata_lines.emplace_back(k, v);
    }
  }

  if (args.flag("json")) {
    nlohmann::json notes = nlohmann::json::array();
    for (const auto& save : read::describe_leftovers(leftovers)) notes.push_back("interrupted " + save.description);
    const nlohmann::json out = {
        {"path", path.string()},
        {"kind", index ? "sharded" : "single"},
        {"index", index ? nlohmann::json(location.index_file->filename().string()) : nlohmann::json(nullptr)},
        {"metadata", metadata},
        {"shards", shards_json},
        {"tensors", tensors_json},
        {"total", {{"tensors", total_tensors}, {"parameters", total_params}, {"tensor_bytes", total_bytes}, {"file_bytes", file_bytes}}},
        {"warnings", notes}};
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::string out = printable(path.string()) + ": " +
                    (index ? "sharded checkpoint (index " + printable(location.index_file->filename().string()) + ", " +
                                 std::to_string(shards.size()) + " shards)"
                           : std::string("single-file checkpoint")) +
                    "\n\n";
  out += tensors.str() + "\n" + shard_table.str() + "\n";
  out += "total: " + std::to_string(total_tensors) + " tensors, " + std::to_string(total_params) + " parameters, " +
         human_bytes(total_bytes) + " of tensor data (" + std::to_string(total_bytes) + " bytes), " + human_bytes(file_bytes) +
         " on disk\n";
  if (!metadata_lines.empty()) {
    out += "metadata:\n";
    for (const auto& [k, v] : metadata_lines) out += "  " + printable(k) + ": " + printable(v) + "\n";
  }
  for (const auto& save : read::describe_leftovers(leftovers)) out += "warning: interrupted " + printable(save.description) + "\n";
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

}  // namespace quicksave::cli
