// Properties of the planner beyond the golden vectors.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace {

TEST(Split, EmptyStateDictGivesNoFiles) {
  const auto split = split_state_dict_into_shards_factory(std::vector<SplitItem>{}, kSafetensorsPattern);
  EXPECT_FALSE(split.is_sharded);
  EXPECT_TRUE(split.filename_to_tensors.empty());
  EXPECT_TRUE(split.tensor_to_filename.empty());
  EXPECT_EQ(split.total_size(), 0);
}

TEST(Split, PatternWithoutSuffixIsFineForOneShard) {
  std::vector<SplitItem> items{{.name = "a", .storage_size = 4}, {.name = "b", .storage_size = 4}};
  const auto split = split_state_dict_into_shards_factory(items, "weights.bin", 100);
  ASSERT_EQ(split.filename_to_tensors.size(), 1u);
  EXPECT_EQ(split.filename_to_tensors[0].first, "weights.bin");
  EXPECT_THROW(split_state_dict_into_shards_factory(items, "weights.bin", 4), Error);
}

TEST(Split, DuplicateKeysAreRefused) {
  std::vector<SplitItem> items{{.name = "a", .storage_size = 4}, {.name = "a", .storage_size = 4}};
  EXPECT_THROW(split_state_dict_into_shards_factory(items, kSafetensorsPattern), Error);
}

TEST(Split, TemplateFactoryUsesTheCallbacks) {
  std::vector<std::pair<std::string, std::vector<int>>> state_dict{{"a", {6}}, {"b", {10}}, {"c", {30}}, {"d", {2}}, {"e", {2}}};
  std::function<std::int64_t(const std::vector<int>&)> size = [](const std::vector<int>& v) {
    std::int64_t s = 0;
    for (int x : v) s += x;
    return s;
  };
  const auto split = split_state_dict_into_shards_factory(state_dict, size, "file{suffix}.dummy", 10);
  ASSERT_EQ(split.filename_to_tensors.size(), 4u);
  EXPECT_EQ(split.filename_to_tensors[1].second, std::vector<std::string>{"c"});  // oversized jumps ahead
}

// Random state dicts: every non-string key is placed exactly once, shards respect the limit
// except for single oversized tensors, and aliases land with their storage's first tensor.
TEST(Split, RandomStateDictsKeepInvariants) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 300; ++round) {
    std::vector<SplitItem> items;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) {
      SplitItem item{.name = "t" + std::to_string(i)};
      item.is_string = rng() % 15 == 0;
      item.storage_size = static_cast<std::int64_t>(rng() % 50);
      if (rng() % 3 == 0) item.storage = StorageKey{"cpu", rng() % 6, static_cast<std::uint64_t>(item.storage_size)};
      if (item.storage) item.storage_size = static_cast<std::int64_t>(item.storage->base * 7 % 50);
      if (item.storage) item.storage->nbytes = static_cast<std::uint64_t>(item.storage_size);
      items.push_back(item);
    }
    const std::int64_t max_size = static_cast<std::int64_t>(rng() % 80);
    const auto split = split_state_dict_into_shards_factory(items, kSafetensorsPattern, max_size);
    std::set<std::string> placed;
    for (const auto& [file, names] : split.filename_to_tensors) {
      for (const auto& name : names) EXPECT_TRUE(placed.insert(name).second) << name;
    }
    std::int64_t expected_total = 0;
    std::set<StorageKey> seen;
    for (const auto& item : items) {
      EXPECT_EQ(placed.count(item.name), item.is_string ? 0u : 1u);
      if (item.is_string) continue;
      if (item.storage && !seen.insert(*item.storage).second) continue;
      expected_total += item.storage_size;
    }
    EXPECT_EQ(split.total_size(), expected_total);
    EXPECT_EQ(split.tensor_to_filename.size(), placed.size());
    EXPECT_EQ(split.is_sharded, split.filename_to_tensors.size() > 1);
  }
}

}  // namespace
}  // namespace quicksave
