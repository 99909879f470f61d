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
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  TempDir dir;
  const Result r = run({"bench", "--size", "4MB", "--json", "--python", "--no-drop-caches", "--dir", dir.path().string()});
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* name : {"python_torch_save", "python_safetensors_save_file", "python_hf_save_torch_state_dict"}) {
    const auto* m = method(j, name);
    ASSERT_NE(m, nullptr) << name;
    if (!m->at("available").get<bool>()) continue;  // safetensors / huggingface_hub not installed here
    ASSERT_EQ(m->at("samples").size(), 1u) << name;
    EXPECT_FALSE(m->at("durable_vs_quicksave").is_null()) << name;
    EXPECT_FALSE(m->at("blocked_vs_quicksave").is_null()) << name;
  }
  EXPECT_TRUE(method(j, "python_torch_save")->at("available").get<bool>());
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace quicksave::cli_test
