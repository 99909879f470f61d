// Loading checkpoints one did not write (issue #13): an index entry must be found in its shard,
// strict or not; a .bin archive is read by quicksave's own reader, never by code it names.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/torch.hpp"
#include "test_support.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

struct AbImpl : torch::nn::Module {
  AbImpl() : a(register_module("a", torch::nn::Linear(2, 2))), b(register_module("b", torch::nn::Linear(2, 2))) {}
  torch::nn::Linear a, b;
};

// A sharded checkpoint of AbImpl whose index maps b.weight to a shard that does not hold it.
fs::path checkpoint_with_a_misplaced_entry(const fs::path& dir) {
  AbImpl source;
  TorchSaveOptions o;
  o.max_shard_size = ShardSize(std::int64_t{20});  // one tensor per shard
  save_torch_state_dict(module_state_dict(source), dir, o);
  const fs::path index_path = dir / "model.safetensors.index.json";
  ShardIndex index = parse_index_json(testing::read_file(index_path));
  std::string other_shard;
  for (const auto& [name, file] : index.weight_map) {
    if (name == "a.bias") other_shard = file;
  }
  for (auto& [name, file] : index.weight_map) {
    if (name == "b.weight") {
      EXPECT_NE(file, other_shard);
      file = other_shard;
    }
  }
  testing::write_file(index_path, index_to_json(index));
  return dir;
}

void expect_names_b_weight(const std::function<void()>& load) {
  try {
    load();
    ADD_FAILURE() << "the load reported success";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find("the index maps b.weight to "), std::string::npos) << e.what();
  }
}

TEST(UntrustedLoad, IndexEntryMissingFromItsShardFailsStrictOrNot) {
  TempDir tmp;
  const fs::path dir = checkpoint_with_a_misplaced_entry(tmp.path() / "c");
  for (const bool strict : {true, false}) {
    SCOPED_TRACE(strict);
    AbImpl target;
    LoadModelOptions options;
    options.strict = strict;
    expect_names_b_weight([&] { load_torch_model(target, dir, options); });
  }
  expect_names_b_weight([&] { load_checkpoint(dir); });
}

TEST(UntrustedLoad, BinArchiveRoundTripsThroughQuicksavesReader) {
  TempDir tmp;
  AbImpl source;
  TorchSaveOptions o;
  o.safe_serialization = false;
  save_torch_state_dict(module_state_dict(source), tmp.path() / "c", o);
  AbImpl target;
  LoadModelOptions options;
  options.strict = true;
  options.safe = false;
  EXPECT_TRUE(load_torch_model(target, tmp.path() / "c", options).all_matched());
  EXPECT_TRUE(torch::equal(target.b->weight, source.b->weight));
}

}  // namespace
}  // namespace quicksave
