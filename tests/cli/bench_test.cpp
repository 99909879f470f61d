// `quicksave bench` smoke tests: the JSON parses and every method is there with its samples.
// No timing is checked (machines differ); the numbers belong in benchmarks/README.md.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace quicksave::cli_test {
namespace {

const nlohmann::json* method(const nlohmann::json& j, const std::string& name) {
  for (const auto& m : j.at("methods")) {
    if (m.at("name") == name) return &m;
  }
  return nullptr;
}

TEST(Bench, JsonHasEveryMethod) {
  TempDir dir;
  const Result r = run({"bench", "--size", "16MB", "--repeat", "1", "--json", "--no-drop-caches", "--dir", dir.path().string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("config").at("repeat"), 1);
  EXPECT_GT(j.at("config").at("tensor_bytes").get<double>(), 12e6);
  EXPECT_GT(j.at("machine").at("cpus").get<int>(), 0);
  for (const char* name : {"quicksave_async_io_uring", "quicksave_async_posix", "quicksave_sync", "torch_save", "plain_safetensors",
                           "disk_limit", "memcpy_limit"}) {
    const auto* m = method(j, name);
    ASSERT_NE(m, nullptr) << name;
    EXPECT_TRUE(m->at("available").get<bool>()) << name;
    ASSERT_EQ(m->at("samples").size(), 1u) << name;
    EXPECT_FALSE(m->at("blocked_s").is_null()) << name;
    EXPECT_FALSE(m->at("gb_per_s").is_null()) << name;
    const bool is_memcpy = std::string(name) == "memcpy_limit";
    EXPECT_EQ(m->at("durable_s").is_null(), is_memcpy) << name;
    EXPECT_EQ(m->at("durable_vs_disk").is_null(), is_memcpy) << name;
    EXPECT_EQ(m->at("staged_vs_memcpy").is_null(), std::string(name) == "disk_limit") << name;
  }
  EXPECT_TRUE(fs::is_empty(dir.path())) << "the bench left files behind";
}

TEST(Bench, PythonPeersJoinTheRun) {
  // The project's virtual environment (scripts/setup.sh installs the real peers into it).
  ASSERT_TRUE(fs::exists(QUICKSAVE_PEERS_PYTHON)) << QUICKSAVE_PEERS_PYTHON << " is missing: run scripts/setup.sh";
  TempDir dir;
  const Result r = run({"bench", "--size", "4MB", "--json", "--python", "--python-exe", QUICKSAVE_PEERS_PYTHON, "--no-drop-caches",
                        "--dir", dir.path().string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* name : {"python_torch_save", "python_safetensors_save_file", "python_hf_save_torch_state_dict"}) {
    const auto* m = method(j, name);
    ASSERT_NE(m, nullptr) << name;
    // scripts/setup.sh installs the real safetensors and huggingface_hub into .venv.
    ASSERT_TRUE(m->at("available").get<bool>()) << name;
    ASSERT_EQ(m->at("samples").size(), 1u) << name;
    EXPECT_FALSE(m->at("durable_vs_quicksave").is_null()) << name;
    EXPECT_FALSE(m->at("blocked_vs_quicksave").is_null()) << name;
  }
  EXPECT_TRUE(method(j, "python_torch_save")->at("available").get<bool>());
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace quicksave::cli_test

namespace quicksave::cli_test {
namespace {

TEST(Bench, RanksReportsAggregateThroughputPerWorldSize) {
  TempDir dir;
  const Result r = run({"bench", "--ranks", "2", "--size", "8MB", "--json", "--dir", dir.path().string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("layout"), "replicated");
  ASSERT_EQ(j.at("runs").size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& run_i = j.at("runs")[i];
    EXPECT_EQ(run_i.at("ranks").get<int>(), 1 << i);
    EXPECT_GT(run_i.at("bytes").get<double>(), 7e6);  // every shard written once, whatever the world size
    EXPECT_GT(run_i.at("aggregate_gbps").get<double>(), 0.0);
  }
  EXPECT_EQ(j.at("runs")[0].at("bytes"), j.at("runs")[1].at("bytes"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace quicksave::cli_test
