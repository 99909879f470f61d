// The torch API against every public golden case (split_cases.json torch_cases, save_cases.json
// save/dedupe/load cases), with real tensors, real files and real loads. Deliberate differences
// from the reference are asserted as quicksave's documented behaviour and named.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "golden.hpp"
#include "commit/checkpoint_fixture.hpp"
#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"
#include "torch/golden_torch.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using testing::golden_state_dict;
using testing::TempDir;
using testing::torch_bytes;

ShardSize shard_size_of(const ordered_json& v) {
  return v.is_string() ? ShardSize(v.get<std::string>()) : ShardSize(v.get<std::int64_t>());
}

// ---- split_torch_state_dict_into_shards ------------------------------------------------------

TEST(TorchGolden, StorageSizesAndIdsMatchTheReference) {
  const auto golden = testing::load_golden("split_cases.json");
  for (const auto& c : golden["torch_cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    const StateDict sd = golden_state_dict(c["input"]);
    std::map<std::string, std::optional<TorchStorageId>> id_of_label;
    for (const auto& t : c["input"]) {
      if (t["kind"] != "tensor") continue;
      const torch::Tensor& tensor = sd[t["name"].get<std::string>()];
      EXPECT_EQ(get_torch_storage_size(tensor), t["ref_get_torch_storage_size"].get<std::int64_t>()) << t["name"];
      const auto id = get_torch_storage_id(tensor);
      EXPECT_EQ(id.has_value(), !t["ref_storage_id_label"].is_null());
      if (!id) continue;
      const std::string label = t["ref_storage_id_label"];
      for (const auto& [other_label, other_id] : id_of_label) {
        EXPECT_EQ(other_label == label, other_id == id) << "labels " << label << " and " << other_label;
      }
      id_of_label[label] = id;
    }
  }
}

TEST(TorchGolden, SplitTorchStateDictIntoShards) {
  const auto golden = testing::load_golden("split_cases.json");
  int checked = 0;
  for (const auto& c : golden["torch_cases"]) {
    const std::string id = c["id"];
    SCOPED_TRACE(id);
    const StateDict sd = golden_state_dict(c["input"]);  // string entries are not representable in C++
    const auto& kwargs = c["kwargs"];
    const std::string pattern = kwargs.value("filename_pattern", std::string(kSafetensorsPattern));
    const ShardSize max_size = kwargs.contains("max_shard_size") ? shard_size_of(kwargs["max_shard_size"]) : ShardSize("5GB");
    if (id == "pattern_without_suffix" || !c["raised"].is_null()) {
      EXPECT_THROW(split_torch_state_dict_into_shards(sd, pattern, max_size), Error);  // deliberate for the former
      ++checked;
      continue;
    }
    const auto split = split_torch_state_dict_into_shards(sd, pattern, max_size);
    const auto& out = c["output"];
    EXPECT_EQ(split.is_sharded, out["is_sharded"].get<bool>());
    EXPECT_EQ(split.total_size(), out["metadata"]["total_size"].get<std::int64_t>());
    std::vector<std::pair<std::string, std::vector<std::string>>> files;
    for (const auto& p : out["filename_to_tensors"]) files.emplace_back(p[0], p[1].get<std::vector<std::string>>());
    EXPECT_EQ(split.filename_to_tensors, files);
    std::vector<std::pair<std::string, std::string>> tensors;
    for (const auto& p : out["tensor_to_filename"]) tensors.emplace_back(p[0], p[1]);
    EXPECT_EQ(split.tensor_to_filename, tensors);
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(golden["torch_cases"].size()));
}

// ---- save_torch_state_dict ------------------------------------------------------------------

TorchSaveOptions options_from(const ordered_json& kwargs) {
  TorchSaveOptions o;
  if (kwargs.contains("filename_pattern")) o.filename_pattern = kwargs["filename_pattern"].get<std::string>();
  if (kwargs.contains("force_contiguous")) o.force_contiguous = kwargs["force_contiguous"];
  if (kwargs.contains("max_shard_size")) o.max_shard_size = shard_size_of(kwargs["max_shard_size"]);
  if (kwargs.contains("safe_serialization")) o.safe_serialization = kwargs["safe_serialization"];
  if (kwargs.contains("is_main_process")) o.is_main_process = kwargs["is_main_process"];
  if (kwargs.contains("shared_tensors_to_discard")) o.shared_tensors_to_discard = kwargs["shared_tensors_to_discard"].get<std::vector<std::string>>();
  if (kwargs.contains("metadata")) {
    for (const auto& [k, v] : kwargs["metadata"].items()) {
      if (v.is_string()) o.metadata.set(k, v.get<std::string>());
      else o.metadata.set(k, v.get<std::int64_t>());
    }
  }
  return o;
}

void create_pre_existing(const fs::path& dir, const ordered_json& names) {
  fs::create_directories(dir);
  for (const auto& n : names) {
    const std::string name = n;
    if (name.ends_with("/")) fs::create_directories(dir / name.substr(0, name.size() - 1));
    else std::ofstream(dir / name) << "stale";
  }
}

// The Hugging Face files of a folder (quicksave's checksum manifest beside them is not the
// reference's; checksum_manifest_test covers it).
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!quicksave::testing::is_manifest(e.path().filename())) names.insert(e.path().filename().string());
  }
  return names;
}

// Checks one safetensors file against the reference's recorded save_file call and the source.
void expect_safetensors_file(const fs::path& path, const ordered_json& call, const StateDict& source) {
  const auto file = SafetensorsFile::open(path);
  std::set<std::string> names;
  for (const auto& t : call["tensors"]) names.insert(t["name"].get<std::string>());
  std::set<std::string> actual;
  for (const auto& t : file.header().tensors) actual.insert(t.name);
  EXPECT_EQ(actual, names);
  StringMap expected_meta;
  for (const auto& [k, v] : call["metadata"].items()) expected_meta.emplace_back(k, v.get<std::string>());
  std::sort(expected_meta.begin(), expected_meta.end());
  EXPECT_EQ(file.header().metadata.value_or(StringMap{}), expected_meta);
  for (const auto& entry : file.header().tensors) {
    const auto bytes = file.data(entry);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), torch_bytes(source[entry.name]))
        << entry.name;
  }
}

void expect_bin_file(const fs::path& path, const ordered_json& expected, const StateDict& source) {
  const StateDict loaded = load_state_dict_from_file(path);
  std::vector<std::string> keys;
  for (const auto& item : loaded) keys.push_back(item.key());
  EXPECT_EQ(keys, expected["keys"].get<std::vector<std::string>>());
  std::map<std::string, const void*> storage_of_label;
  for (const auto& pair : expected["storages"]) {
    const std::string name = pair[0], label = pair[1];
    const auto& t = loaded[name];
    EXPECT_TRUE(torch::equal(t, source[name])) << name;
    const void* storage = t.storage().data();
    if (storage_of_label.count(label)) EXPECT_EQ(storage_of_label[label], storage) << name << " should share " << label;
    storage_of_label[label] = storage;
  }
}

// The ids whose expected files_after or raised we deliberately do not reproduce, and why.
const std::map<std::string, std::string> kDeliberate = {
    {"bin_cleanup", "stale-file clean-up removes only exact shard/index names of the pattern"},
    {"bin_missing_directory", "the save directory is created"},
    {"st_lone_slice_error", "a lone partial view is saved with its own bytes"},
    {"st_disjoint_slices_error", "disjoint slices of one storage are each saved"},
    {"st_string_value_error", "a C++ state dict cannot hold strings"},
    {"st_complex64_keyerror", "complex64 is saved as C64"},
    {"st_force_contiguous_false", "refused with safetensors' own error (the golden run used a recording shim)"},
};

TEST(TorchGolden, SaveCasesMatchTheReference) {
  const auto golden = testing::load_golden("save_cases.json");
  int exact = 0;
  for (const auto& c : golden["save_cases"]) {
    const std::string id = c["id"];
    SCOPED_TRACE(id);
    if (kDeliberate.count(id)) continue;  // covered one by one below
    TempDir tmp;
    const fs::path dir = tmp.path() / "save_directory";
    create_pre_existing(dir, c["pre_existing_files"]);
    const StateDict sd = golden_state_dict(c["input"]);
    const auto options = options_from(c["kwargs"]);
    const Metadata metadata_before = options.metadata;
    save_torch_state_dict(sd, dir, options);
    EXPECT_EQ(options.metadata, metadata_before);  // never mutated (the reference mutates it)

    std::set<std::string> expected_files;
    for (const auto& f : c["files_after"]) expected_files.insert(f["name"].get<std::string>());
    EXPECT_EQ(listing(dir), expected_files);
    std::map<std::string, const ordered_json*> calls;
    for (const auto& call : c["safetensors_save_file_calls"]) calls[call["file"]] = &call;
    for (const auto& f : c["files_after"]) {
      const std::string name = f["name"], kind = f["kind"];
      if (kind == "json") {
        std::ifstream in(dir / name);
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        EXPECT_EQ(text, f["text"].get<std::string>()) << name;
      } else if (kind == "torch.save") {
        expect_bin_file(dir / name, f, sd);
      } else if (kind.starts_with("safetensors")) {
        ASSERT_TRUE(calls.count(name)) << name;
        expect_safetensors_file(dir / name, *calls[name], sd);
      }
    }
    ++exact;
  }
  EXPECT_EQ(exact, static_cast<int>(golden["save_cases"].size() - kDeliberate.size()));
}

const ordered_json& save_case(const std::string& id) {
  static const ordered_json golden = testing::load_golden("save_cases.json");
  for (const auto& c : golden["save_cases"]) {
    if (c["id"] == id) return c;
  }
  throw std::runtime_error("no case " + id);
}

TEST(TorchDeliberate, CleanupRemovesOnlyExactPatternNames) {  // bin_cleanup
  const auto& c = save_case("bin_cleanup");
  TempDir tmp;
  const fs::path dir = tmp.path() / "d";
  create_pre_existing(dir, c["pre_existing_files"]);
  save_torch_state_dict(golden_state_dict(c["input"]), dir, options_from(c["kwargs"]));
  std::set<std::string> expected;
  for (const auto& f : c["files_after"]) expected.insert(f["name"].get<std::string>());
  // The reference also deletes these three because its regex is a start-anchored prefix match
  // with unescaped dots; quicksave keeps them.
  for (const char* kept : {"pytorch_model.bin.bak", "pytorch_modelXbin", "pytorch_model.binary"}) expected.insert(kept);
  EXPECT_EQ(listing(dir), expected);
}

TEST(TorchDeliberate, MissingDirectoryIsCreated) {  // bin_missing_directory
  const auto& c = save_case("bin_missing_directory");
  TempDir tmp;
  const fs::path dir = tmp.path() / "not" / "there";
  save_torch_state_dict(golden_state_dict(c["input"]), dir, options_from(c["kwargs"]));
  EXPECT_TRUE(fs::exists(dir / "pytorch_model.bin"));
}

TEST(TorchDeliberate, PartialViewsAndComplexAreSavedWithTheirOwnBytes) {
  for (const char* id : {"st_lone_slice_error", "st_disjoint_slices_error", "st_complex64_keyerror"}) {
    SCOPED_TRACE(id);
    const auto& c = save_case(id);
    TempDir tmp;
    const StateDict sd = golden_state_dict(c["input"]);
    save_torch_state_dict(sd, tmp.path() / "d");
    const StateDict back = load_state_dict_from_file(tmp.path() / "d" / "model.safetensors");
    ASSERT_EQ(back.size(), sd.size());
    for (const auto& item : sd) EXPECT_EQ(torch_bytes(back[item.key()]), torch_bytes(item.value())) << item.key();
  }
}

TEST(TorchDeliberate, ForceContiguousFalseRefusesNonContiguous) {
  const auto& c = save_case("st_force_contiguous_false");
  TempDir tmp;
  try {
    save_torch_state_dict(golden_state_dict(c["input"]), tmp.path() / "d", options_from(c["kwargs"]));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non contiguous tensor: `w_t`"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "d"));  // nothing written, nothing created
}

// ---- load_torch_model -------------------------------------------------------------------------

struct NetImpl : torch::nn::Module {
  NetImpl() : torch::nn::Module("Net") {
    const double values[] = {4, 10, 30, 2, 2};
    for (int i = 0; i < 5; ++i) register_parameter("layer_" + std::to_string(i + 1), torch::tensor({values[i]}, torch::kFloat));
  }
};

StateDict fixture_state_dict(std::initializer_list<const char*> keys) {
  StateDict sd;
  std::int64_t v = 1;
  for (const char* k : keys) sd.insert(k, torch::tensor({v++ * 10}, torch::kLong));
  return sd;
}

std::string with_dir(std::string message, const fs::path& dir) {
  for (auto at = message.find("<dir>"); at != std::string::npos; at = message.find("<dir>")) message.replace(at, 5, dir.string());
  return message;
}

TEST(TorchGolden, LoadCases) {
  const auto golden = testing::load_golden("save_cases.json");
  for (const auto& c : golden["load_cases"]) {
    const std::string id = c["id"];
    SCOPED_TRACE(id);
    TempDir tmp;
    fs::path dir = tmp.path() / "ckpt";
    LoadModelOptions options;
    fs::path path = dir;
    TorchSaveOptions bin;
    bin.safe_serialization = false;
    bin.max_shard_size = 8;
    if (id.starts_with("bin_sharded")) {
      options.safe = false;
      options.strict = id.find("strict_true") != std::string::npos;
      StateDict sd = id == "bin_sharded_missing_key_strict_true" ? fixture_state_dict({"layer_1", "layer_2", "layer_3", "layer_4"})
                     : id == "bin_sharded_missing_and_unexpected_strict_true"
                         ? fixture_state_dict({"layer_1", "layer_2", "layer_3", "zz", "extra_key"})
                         : fixture_state_dict({"layer_1", "layer_2", "layer_3", "layer_4", "layer_5", "extra_key"});
      save_torch_state_dict(sd, dir, bin);
    } else if (id.starts_with("bin_single") || id == "bin_file_path_direct") {
      bin.max_shard_size = ShardSize("1GB");
      options.safe = id == "bin_single_safe_true_no_safetensors";
      save_torch_state_dict(id == "bin_single_strict_false" ? fixture_state_dict({"layer_1", "layer_2", "layer_3", "layer_4", "layer_5", "extra_key"})
                                                            : fixture_state_dict({"layer_1", "layer_2", "layer_3", "layer_4", "layer_5"}),
                            dir, bin);
      if (id == "bin_file_path_direct") path = dir / "pytorch_model.bin";
    } else if (id == "path_does_not_exist") {
      path = "/nonexistent/hfgold_path";
    } else if (id.starts_with("index_validation")) {
      fs::create_directories(dir);
      const std::string shard = c["description"].get<std::string>().substr(std::string("weight_map value '").size());
      std::string value = shard.substr(0, shard.size() - 1);
      for (auto at = value.find("\\\\"); at != std::string::npos; at = value.find("\\\\", at + 1)) value.replace(at, 2, "\\");
      ShardIndex index;
      index.metadata.set("total_size", std::int64_t{8});
      index.weight_map.emplace_back("layer_1", value);
      std::ofstream(dir / "model.safetensors.index.json") << index_to_json(index);
    }
    auto net = std::make_shared<NetImpl>();
    if (c["raised"].is_null()) {
      const IncompatibleKeys keys = load_torch_model(*net, path, options);
      EXPECT_EQ(keys.missing_keys, c["result"]["missing_keys"].get<std::vector<std::string>>());
      EXPECT_EQ(keys.unexpected_keys, c["result"]["unexpected_keys"].get<std::vector<std::string>>());
      EXPECT_EQ(net->named_parameters()["layer_1"].item<float>(), 10.f);  // int64 10 copied with a cast
    } else {
      try {
        load_torch_model(*net, path, options);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), with_dir(c["raised"]["message"], dir));
      }
    }
  }
}

TEST(TorchDeliberate, StrictLoadOfAShardedCheckpointWithMatchingKeys) {
  // The reference loads each shard strictly and so always fails here (bin_sharded_strict_true_exact_keys).
  TempDir tmp;
  TorchSaveOptions o;
  o.max_shard_size = 8;
  save_torch_state_dict(fixture_state_dict({"layer_1", "layer_2", "layer_3", "layer_4", "layer_5"}), tmp.path() / "c", o);
  auto net = std::make_shared<NetImpl>();
  LoadModelOptions strict;
  strict.strict = true;
  EXPECT_TRUE(load_torch_model(*net, tmp.path() / "c", strict).all_matched());
  EXPECT_EQ(net->named_parameters()["layer_5"].item<float>(), 50.f);
}

}  // namespace
}  // namespace quicksave
