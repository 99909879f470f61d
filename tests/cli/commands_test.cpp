// `quicksave` commands other than verify: --help and usage errors of every command, save-random
// (names, shapes, determinism, replacing a checkpoint), inspect (table and JSON), recover, demo.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace quicksave::cli_test {
namespace {

const char* const kCommands[] = {"inspect", "verify", "save-random", "recover", "bench", "demo"};

TEST(CliHelp, TopLevelListsEveryCommandAndTheExitCodes) {
  const Result r = run({"--help"});
  EXPECT_EQ(r.status, 0);
  for (const char* c : kCommands) EXPECT_NE(r.out.find(std::string("  ") + c), std::string::npos) << c;
  EXPECT_NE(r.out.find("Exit status"), std::string::npos);
  EXPECT_NE(r.out.find("2  usage error"), std::string::npos);
}

TEST(CliHelp, EveryCommandHasHelp) {
  for (const char* c : kCommands) {
    for (const char* flag : {"--help", "-h"}) {
      const Result r = run({c, flag});
      EXPECT_EQ(r.status, 0) << c;
      EXPECT_EQ(r.out.rfind(std::string("Usage: quicksave ") + c, 0), 0u) << c << ": " << r.out;
      EXPECT_NE(r.out.find("Exit status"), std::string::npos) << c;
    }
  }
}

TEST(CliUsage, MistakesExitWith2AndPointToHelp) {
  const std::vector<std::vector<std::string>> mistakes = {
      {},
      {"frobnicate"},
      {"inspect"},
      {"inspect", "a", "b"},
      {"verify", "--bogus", "x"},
      {"save-random", "/tmp/x"},
      {"save-random", "/tmp/x", "--size", "12XB"},
      {"save-random", "/tmp/x", "--size", "8MB", "--layout", "resnet"},
      {"save-random", "/tmp/x", "--size", "8MB", "--dtype", "int3"},
      {"save-random", "/tmp/x", "--size", "8MB", "--seed", "-1"},
      {"save-random", "/tmp/x", "--size"},
      {"recover"},
      {"bench", "--repeat", "0"},
      {"bench", "extra"},
      {"demo", "--size", "0"},
  };
  for (const auto& args : mistakes) {
    const Result r = run(args);
    std::string shown;
    for (const auto& a : args) shown += a + " ";
    EXPECT_EQ(r.status, 2) << shown << r.err;
    EXPECT_NE(r.err.find("help"), std::string::npos) << shown << r.err;
    EXPECT_TRUE(r.out.empty()) << shown;
  }
}

nlohmann::json inspect_json(const fs::path& path) {
  const Result r = run({"inspect", path.string(), "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

// name → shape of every tensor in the inspect JSON.
std::map<std::string, std::vector<std::uint64_t>> shapes(const nlohmann::json& j) {
  std::map<std::string, std::vector<std::uint64_t>> out;
  for (const auto& t : j.at("tensors")) out[t.at("name")] = t.at("shape").get<std::vector<std::uint64_t>>();
  return out;
}

TEST(SaveRandom, Gpt2XlHasTheRealNamesAndShapes) {
  TempDir dir;
  const Result r = run({"save-random", (dir.path() / "gpt2").string(), "--size", "8MB", "--layout", "gpt2-xl"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir.path() / "gpt2" / "model.safetensors"));
  const auto j = inspect_json(dir.path() / "gpt2");
  EXPECT_EQ(j.at("kind"), "single");
  const auto s = shapes(j);
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias",
                           "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight", "ln_f.weight", "ln_f.bias"}) {
    EXPECT_TRUE(s.contains(name)) << name;
  }
  const std::uint64_t h = s.at("wte.weight").at(1);
  EXPECT_EQ(s.at("h.0.attn.c_attn.weight"), (std::vector<std::uint64_t>{h, 3 * h}));
  EXPECT_EQ(s.at("h.0.mlp.c_fc.weight"), (std::vector<std::uint64_t>{h, 4 * h}));
  EXPECT_EQ(j.at("tensors").at(0).at("dtype"), "BF16");
  EXPECT_EQ(j.at("metadata").at("quicksave_layout"), "gpt2-xl");
  // About the requested size.
  const double bytes = j.at("total").at("tensor_bytes").get<double>();
  EXPECT_GT(bytes, 6e6);
  EXPECT_LT(bytes, 10e6);
}

TEST(SaveRandom, LlamaLikeHasTheRealNamesAndShapesAndTheDtype) {
  TempDir dir;
  const Result r = run({"save-random", (dir.path() / "llama").string(), "--size", "8MB", "--dtype", "f32"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = inspect_json(dir.path() / "llama");
  const auto s = shapes(j);
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                           "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                           "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                           "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
                           "lm_head.weight"}) {
    EXPECT_TRUE(s.contains(name)) << name;
  }
  const auto gate = s.at("model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(s.at("model.layers.0.mlp.down_proj.weight"), (std::vector<std::uint64_t>{gate[1], gate[0]}));
  for (const auto& t : j.at("tensors")) EXPECT_EQ(t.at("dtype"), "F32");
}

TEST(SaveRandom, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir dir;
  const auto save = [&](const std::string& name, const std::string& seed) {
    const Result r = run({"save-random", (dir.path() / name).string(), "--size", "8MB", "--seed", seed, "--max-shard-size", "3MB"});
    ASSERT_EQ(r.status, 0) << r.err;
  };
  save("a", "7");
  save("b", "7");
  save("c", "8");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path() / "a")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), 5u);  // three shards, the index and quicksave's checksum manifest
  for (const auto& name : names) {
    EXPECT_EQ(read_file(dir.path() / "a" / name), read_file(dir.path() / "b" / name)) << name;
    if (name.ends_with(".safetensors")) {
      ASSERT_TRUE(fs::exists(dir.path() / "c" / name)) << name;
      EXPECT_NE(read_file(dir.path() / "a" / name), read_file(dir.path() / "c" / name)) << name;
    }
  }
}

TEST(SaveRandom, ReplacesAnExistingCheckpointThroughTheCommit) {
  TempDir dir;
  const fs::path target = dir.path() / "ckpt";
  ASSERT_EQ(run({"save-random", target.string(), "--size", "8MB", "--seed", "1", "--max-shard-size", "3MB"}).status, 0);
  ASSERT_TRUE(fs::exists(target / "model.safetensors.index.json"));
  const Result r = run({"save-random", target.string(), "--size", "8MB", "--seed", "2", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("files"), nlohmann::json::array({"model.safetensors"}));
  EXPECT_EQ(j.at("commit_mode"), "exchange");
  // Only the new single file is left: the previous shards and index are gone, no temporaries.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(target)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"model.safetensors", "model.safetensors.quicksave-manifest.json"}));
  for (const auto& e : fs::directory_iterator(dir.path())) EXPECT_EQ(e.path().filename(), "ckpt");
  // The bytes are those of seed 2.
  ASSERT_EQ(run({"save-random", (dir.path() / "fresh").string(), "--size", "8MB", "--seed", "2"}).status, 0);
  EXPECT_EQ(read_file(target / "model.safetensors"), read_file(dir.path() / "fresh" / "model.safetensors"));
  EXPECT_EQ(run({"verify", target.string()}).status, 0);
}

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ckpt_ = dir_.path() / "ckpt";
    const Result r = run({"save-random", ckpt_.string(), "--size", "8MB", "--max-shard-size", "3MB"});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  TempDir dir_;
  fs::path ckpt_;
};

TEST_F(InspectTest, TableListsTensorsShardsTotalsAndMetadata) {
  const Result r = run({"inspect", ckpt_.string()});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* text : {"sharded checkpoint (index model.safetensors.index.json, 3 shards)", "name", "dtype", "shape", "bytes",
                           "shard", "model.layers.0.self_attn.q_proj.weight", "BF16", "model-00001-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "total: ", " tensors, ", " parameters, ", "metadata:",
                           "total_size: ", "quicksave_layout: llama-7b-like", "format=pt"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress bar or noise when not on a terminal
}

TEST_F(InspectTest, JsonParsesAndAddsUp) {
  const auto index = nlohmann::json::parse(read_file(ckpt_ / "model.safetensors.index.json"));
  for (const fs::path& path : {ckpt_, ckpt_ / "model.safetensors.index.json"}) {
    const auto j = inspect_json(path);
    EXPECT_EQ(j.at("kind"), "sharded");
    EXPECT_EQ(j.at("index"), "model.safetensors.index.json");
    EXPECT_EQ(j.at("shards").size(), 3u);
    EXPECT_EQ(j.at("tensors").size(), index.at("weight_map").size());
    std::uint64_t bytes = 0, file_bytes = 0;
    for (const auto& t : j.at("tensors")) {
      bytes += t.at("bytes").get<std::uint64_t>();
      EXPECT_EQ(index.at("weight_map").at(t.at("name").get<std::string>()), t.at("shard"));
    }
    for (const auto& s : j.at("shards")) {
      file_bytes += s.at("bytes").get<std::uint64_t>();
      EXPECT_EQ(s.at("bytes").get<std::uint64_t>(), fs::file_size(ckpt_ / s.at("file").get<std::string>()));
    }
    EXPECT_EQ(j.at("total").at("tensor_bytes").get<std::uint64_t>(), bytes);
    EXPECT_EQ(j.at("total").at("file_bytes").get<std::uint64_t>(), file_bytes);
    EXPECT_EQ(j.at("metadata").at("total_size").get<std::uint64_t>(), bytes);
  }
  // One shard file alone.
  const auto one = inspect_json(ckpt_ / "model-00002-of-00003.safetensors");
  EXPECT_EQ(one.at("kind"), "single");
  EXPECT_EQ(one.at("shards").size(), 1u);
  EXPECT_EQ(one.at("metadata").at("format"), "pt");
}

TEST_F(InspectTest, UnreadableCheckpointExits1WithTheReason) {
  write_file(ckpt_ / "model.safetensors.index.json", "{\"weight_map\": ");
  Result r = run({"inspect", ckpt_.string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("invalid index JSON"), std::string::npos) << r.err;
  r = run({"inspect", (dir_.path() / "nothing-here").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
}

TEST(Recover, NothingToDo) {
  TempDir dir;
  ASSERT_EQ(run({"save-random", (dir.path() / "ckpt").string(), "--size", "1MB"}).status, 0);
  const std::string before = listing(dir.path());
  const Result r = run({"recover", (dir.path() / "ckpt").string()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("nothing to recover"), std::string::npos) << r.out;
  EXPECT_EQ(listing(dir.path()), before);
}

TEST(Demo, SavesDuringTrainingThenVerifiesAndReloads) {
  TempDir dir;
  const Result r = run({"demo", "--size", "16MB", "--dir", (dir.path() / "demo").string()});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  for (const char* text : {"save_async blocked the caller", "time to staged", "time to committed", "GB/s",
                           "training step without a save", "training step during the save", "verify", "OK (",
                           "tensors identical to the weights at save time"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_EQ(run({"verify", (dir.path() / "demo").string()}).status, 0);
}

}  // namespace
}  // namespace quicksave::cli_test
