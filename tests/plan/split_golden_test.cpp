// The shard planner against golden/split_cases.json: every factory case, and every torch case
// driven through the generic factory with the reference's own storage sizes and ids.
#include <gtest/gtest.h>

#include "golden.hpp"
#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace {

using nlohmann::ordered_json;

void expect_split_equals(const StateDictSplit& split, const ordered_json& expected) {
  EXPECT_EQ(split.is_sharded, expected["is_sharded"].get<bool>());
  ASSERT_EQ(split.metadata.size(), 1u);
  EXPECT_EQ(split.total_size(), expected["metadata"]["total_size"].get<std::int64_t>());
  std::vector<std::pair<std::string, std::vector<std::string>>> files;
  for (const auto& pair : expected["filename_to_tensors"]) {
    files.emplace_back(pair[0].get<std::string>(), pair[1].get<std::vector<std::string>>());
  }
  EXPECT_EQ(split.filename_to_tensors, files);
  std::vector<std::pair<std::string, std::string>> tensors;
  for (const auto& pair : expected["tensor_to_filename"]) tensors.emplace_back(pair[0], pair[1]);
  EXPECT_EQ(split.tensor_to_filename, tensors);
}

ShardSize shard_size_of(const ordered_json& v) {
  if (v.is_string()) return ShardSize(v.get<std::string>());
  return ShardSize(v.get<std::int64_t>());
}

TEST(SplitGolden, FactoryCases) {
  const auto golden = testing::load_golden("split_cases.json");
  int checked = 0;
  for (const auto& c : golden["factory_cases"]) {
    SCOPED_TRACE(c["id"].get<std::string>());
    const bool use_id = c["get_storage_id"] == "list[0]";
    std::vector<SplitItem> items;
    for (const auto& entry : c["input"]) {
      SplitItem item{.name = entry[0]};
      if (entry[1].is_string()) {
        item.is_string = true;
      } else {
        for (const auto& v : entry[1]) item.storage_size += v.get<std::int64_t>();
        if (use_id) item.storage = StorageKey{"", entry[1][0].get<std::uint64_t>(), 0};
      }
      items.push_back(item);
    }
    ASSERT_TRUE(c["raised"].is_null());
    expect_split_equals(split_state_dict_into_shards_factory(items, c["filename_pattern"].get<std::string>(),
                                                             shard_size_of(c["max_shard_size"])),
                        c["output"]);
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

// Storage sizes and ids exactly as the reference computed them for real torch tensors.
std::vector<SplitItem> items_from_reference(const ordered_json& input) {
  std::vector<SplitItem> items;
  for (const auto& t : input) {
    SplitItem item{.name = t["name"]};
    if (t["kind"] == "string") {
      item.is_string = true;
    } else {
      item.storage_size = t["ref_get_torch_storage_size"];
      if (!t["ref_storage_id_label"].is_null()) {
        item.storage = StorageKey{"label", std::hash<std::string>{}(t["ref_storage_id_label"].get<std::string>()), 0};
      }
    }
    items.push_back(item);
  }
  return items;
}

TEST(SplitGolden, TorchCasesThroughTheFactory) {
  const auto golden = testing::load_golden("split_cases.json");
  int checked = 0;
  for (const auto& c : golden["torch_cases"]) {
    const std::string id = c["id"];
    SCOPED_TRACE(id);
    const auto& kwargs = c["kwargs"];
    const std::string pattern = kwargs.value("filename_pattern", std::string(kSafetensorsPattern));
    const ShardSize max_size = kwargs.contains("max_shard_size") ? shard_size_of(kwargs["max_shard_size"]) : ShardSize("5GB");
    const auto items = items_from_reference(c["input"]);
    if (id == "pattern_without_suffix") {
      // Deliberate difference: upstream silently names every shard "weights.bin" and loses all
      // but the last; quicksave refuses with a clear error.
      ASSERT_TRUE(c["output"]["is_sharded"] == false);
      try {
        split_state_dict_into_shards_factory(items, pattern, max_size);
        ADD_FAILURE() << "expected an error";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("has no {suffix} field"), std::string::npos) << e.what();
      }
    } else if (!c["raised"].is_null()) {
      try {
        split_state_dict_into_shards_factory(items, pattern, max_size);
        ADD_FAILURE() << "expected an error";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        const std::string message = c["raised"]["message"];
        if (c["raised"]["type"] == "KeyError") {
          EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
        } else {
          EXPECT_EQ(std::string(e.what()), message);
        }
      }
    } else {
      expect_split_equals(split_state_dict_into_shards_factory(items, pattern, max_size), c["output"]);
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(golden["torch_cases"].size()));
  EXPECT_GE(checked, 31);
}

}  // namespace
}  // namespace quicksave
