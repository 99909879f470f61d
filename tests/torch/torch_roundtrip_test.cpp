// Round trips through the torch API beyond the golden cases: every dtype, aliases that are
// different views, modules, key-filtered loads, loader errors, and a tensor beyond 4 GiB.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "commit/checkpoint_fixture.hpp"
#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/torch.hpp"
#include "torch/golden_torch.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::torch_bytes;

TEST(TorchRoundTrip, EveryDtypeZeroDimAndEmpty) {
  TempDir tmp;
  StateDict sd;
  for (const auto dt : {torch::kBool, torch::kByte, torch::kChar, torch::kShort, torch::kInt, torch::kLong, torch::kHalf,
                        torch::kBFloat16, torch::kFloat, torch::kDouble, torch::kComplexFloat}) {
    const std::string n = c10::toString(dt);
    sd.insert("v." + n, torch::randn({5, 3}).mul(10).to(dt));
    sd.insert("s." + n, torch::tensor(3).to(dt));
    sd.insert("e." + n, torch::empty({0, 2}, dt));
  }
  for (const bool mmap : {true, false}) {
    save_torch_state_dict(sd, tmp.path() / "c");
    const StateDict back = load_state_dict_from_file(tmp.path() / "c" / "model.safetensors", std::nullopt, mmap);
    ASSERT_EQ(back.size(), sd.size());
    for (const auto& item : sd) {
      const auto& t = back[item.key()];
      EXPECT_EQ(t.scalar_type(), item.value().scalar_type()) << item.key();
      EXPECT_EQ(t.sizes(), item.value().sizes()) << item.key();
      EXPECT_EQ(torch_bytes(t), torch_bytes(item.value())) << item.key();
    }
  }
}

TEST(TorchRoundTrip, LoadedTensorsCanBeModifiedInPlaceWithoutTouchingTheFile) {
  TempDir tmp;
  StateDict sd;
  sd.insert("w", torch::ones({1000}));
  save_torch_state_dict(sd, tmp.path() / "c");
  StateDict back = load_state_dict_from_file(tmp.path() / "c" / "model.safetensors");
  back["w"].mul_(3);  // zero-copy over a private mapping: copy-on-write
  EXPECT_EQ(back["w"][0].item<float>(), 3.f);
  EXPECT_EQ(load_state_dict_from_file(tmp.path() / "c" / "model.safetensors")["w"][0].item<float>(), 1.f);
}

TEST(TorchRoundTrip, NonContiguousAliasesAreBothSavedCorrectly) {
  // The reference raises for `w` and `w.t()` (view(-1) of a transpose) and would otherwise
  // record the transpose as an alias of w; quicksave saves each view with its own bytes.
  TempDir tmp;
  auto w = torch::arange(12, torch::kFloat).reshape({3, 4});
  StateDict sd;
  sd.insert("w", w);
  sd.insert("w_t", w.t());
  sd.insert("w_again", w);  // the same view: de-duplicated, recorded as an alias
  save_torch_state_dict(sd, tmp.path() / "c");
  const auto file = SafetensorsFile::open(tmp.path() / "c" / "model.safetensors");
  EXPECT_EQ(file.header().tensors.size(), 2u);
  const auto& meta = *file.header().metadata;
  EXPECT_NE(std::find(meta.begin(), meta.end(), std::pair<std::string, std::string>{"w_again", "w"}), meta.end());
  const StateDict back = load_state_dict_from_file(tmp.path() / "c" / "model.safetensors");
  EXPECT_TRUE(torch::equal(back["w_t"], w.t()));
  EXPECT_TRUE(torch::equal(back["w"], w));
}

struct BlockImpl : torch::nn::Module {
  BlockImpl() {
    linear = register_module("linear", torch::nn::Linear(4, 3));
    norm = register_module("norm", torch::nn::BatchNorm1d(3));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};
TORCH_MODULE(Block);

struct NetImpl : torch::nn::Module {
  NetImpl() : torch::nn::Module("Net") {
    scale = register_parameter("scale", torch::ones({1}));
    first = register_module("first", Block());
    second = register_module("second", Block());
  }
  torch::Tensor scale;
  Block first{nullptr}, second{nullptr};
};
TORCH_MODULE(Net);

TEST(TorchRoundTrip, ModuleStateDictOrderAndModelRoundTrip) {
  Net net;
  std::vector<std::string> keys;
  for (const auto& item : module_state_dict(*net)) keys.push_back(item.key());
  // Python's order: own parameters, own buffers, then each child in registration order.
  ASSERT_GE(keys.size(), 4u);
  EXPECT_EQ(keys[0], "scale");
  EXPECT_EQ(keys[1], "first.linear.weight");
  EXPECT_EQ(keys[2], "first.linear.bias");
  EXPECT_EQ(keys[3], "first.norm.weight");
  EXPECT_NE(std::find(keys.begin(), keys.end(), "second.norm.running_mean"), keys.end());

  TempDir tmp;
  TorchSaveOptions options;
  options.max_shard_size = 40;
  save_torch_model(*net, tmp.path() / "c", options);
  Net other;
  LoadModelOptions strict;
  strict.strict = true;
  EXPECT_TRUE(load_torch_model(*other, tmp.path() / "c", strict).all_matched());
  for (const auto& item : module_state_dict(*net)) {
    EXPECT_TRUE(torch::equal(item.value(), module_state_dict(*other)[item.key()])) << item.key();
  }
}

TEST(TorchRoundTrip, KeyFilteredLoadsReadOnlyTheShardsTheyNeed) {
  TempDir tmp;
  StateDict sd;
  for (int i = 0; i < 6; ++i) sd.insert("layer" + std::to_string(i), torch::full({10}, static_cast<float>(i)));
  TorchSaveOptions options;
  options.max_shard_size = 40;  // one tensor per shard
  save_torch_state_dict(sd, tmp.path() / "c", options);
  // Remove a shard this rank does not need: loading its own keys must not touch it.
  fs::remove(tmp.path() / "c" / "model-00006-of-00006.safetensors");
  LoadModelOptions mine;
  mine.key_filter = [](const std::string& k) { return k == "layer1" || k == "layer2"; };
  const StateDict part = load_checkpoint(tmp.path() / "c", mine);
  ASSERT_EQ(part.size(), 2u);
  EXPECT_EQ(part["layer2"][0].item<float>(), 2.f);
  EXPECT_THROW(load_checkpoint(tmp.path() / "c"), Error);  // the whole checkpoint needs the missing shard
}

TEST(TorchRoundTrip, LoaderErrorsAreTheReferences) {
  TempDir tmp;
  StateDict sd;
  sd.insert("w", torch::zeros({2, 2}));
  TorchSaveOptions custom;
  custom.metadata.set("format", std::string("custom"));
  save_torch_state_dict(sd, tmp.path() / "c", custom);
  try {
    load_state_dict_from_file(tmp.path() / "c" / "model.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not contain the valid metadata"), std::string::npos);
  }
  try {
    load_state_dict_from_file(tmp.path() / "nope.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find("No checkpoint file found at"), std::string::npos);
  }
  save_torch_state_dict(sd, tmp.path() / "d");
  struct Small : torch::nn::Module {
    Small() : torch::nn::Module("Small") { register_parameter("w", torch::zeros({3})); }
  } small;
  try {
    load_torch_model(small, tmp.path() / "d");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("size mismatch for w: copying a param with shape torch.Size([2, 2]) from checkpoint, "
                                         "the shape in current model is torch.Size([3])."),
              std::string::npos)
        << e.what();
  }
}

TEST(TorchEngineLoads, MatchingParametersAreReadInPlaceOthersAreCastAndVerifyFindsAFlip) {
  TempDir tmp;
  torch::manual_seed(3);
  Net net;
  TorchSaveOptions options;
  options.max_shard_size = 64;
  save_torch_model(*net, tmp.path() / "c", options);
  Net other;
  other->to(torch::kFloat64);  // every parameter now differs in dtype: read into new tensors, then cast by copy_
  Net same;
  std::map<std::string, const void*> pointers;
  for (const auto& item : module_state_dict(*same)) pointers[item.key()] = item.value().data_ptr();
  LoadModelOptions verified;
  verified.strict = true;
  verified.verify = true;
  EXPECT_TRUE(load_torch_model(*same, tmp.path() / "c", verified).all_matched());
  EXPECT_TRUE(load_torch_model(*other, tmp.path() / "c", verified).all_matched());
  for (const auto& item : module_state_dict(*net)) {
    const torch::Tensor in_place = module_state_dict(*same)[item.key()];
    EXPECT_EQ(in_place.data_ptr(), pointers[item.key()]) << item.key();  // read into the parameter's own memory
    EXPECT_TRUE(torch::equal(item.value(), in_place)) << item.key();
    EXPECT_TRUE(torch::equal(item.value().to(torch::kFloat64), module_state_dict(*other)[item.key()])) << item.key();
  }
  // A flipped byte in the last shard's last tensor: found and named under verify, not without.
  std::vector<fs::path> shards;
  for (const auto& entry : fs::directory_iterator(tmp.path() / "c")) {
    if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
  }
  std::sort(shards.begin(), shards.end());
  {
    std::fstream f(shards.back(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    const char last = static_cast<char>(f.get());
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(last ^ 0x40));
  }
  try {
    load_torch_model(*same, tmp.path() / "c", verified);
    FAIL() << "a flipped byte loaded under verify";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt);
    EXPECT_NE(std::string(e.what()).find(shards.back().filename().string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("do not match the manifest"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(load_torch_model(*same, tmp.path() / "c"));
}

// Header offsets beyond 32 bits: a 4.3 GB tensor followed by a small one.
TEST(TorchLong, TensorLargerThanFourGiB) {
  TempDir tmp;
  const std::int64_t big_bytes = (4ll << 30) + 4096 * 3 + 7;
  auto big = torch::empty({big_bytes}, torch::kByte);
  big.zero_();
  big[0] = 11;
  big[(1ll << 32) + 5] = 22;
  big[big_bytes - 1] = 33;
  StateDict sd;
  sd.insert("a.big", big);
  sd.insert("b.after", torch::arange(16, torch::kByte));
  save_torch_state_dict(sd, tmp.path() / "c");
  const auto file = SafetensorsFile::open(tmp.path() / "c" / "model.safetensors");
  const TensorEntry* after = file.find("b.after");
  ASSERT_NE(after, nullptr);
  EXPECT_GT(after->begin, 1ull << 32);
  const auto bytes = file.data(*after);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(static_cast<int>(bytes[i]), i);
  const auto big_bytes_view = file.data(*file.find("a.big"));
  EXPECT_EQ(static_cast<int>(big_bytes_view[0]), 11);
  EXPECT_EQ(static_cast<int>(big_bytes_view[(1ull << 32) + 5]), 22);
  EXPECT_EQ(static_cast<int>(big_bytes_view[big_bytes - 1]), 33);
}

}  // namespace
}  // namespace quicksave
