// `quicksave verify` on a good checkpoint and on broken ones: truncated shard, wrong offset in a
// header, missing shard, bad index (invalid JSON, a path escaping the folder, tensors missing or
// unknown, a tensor in two shards, total_size), and the checksum of the data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace quicksave::cli_test {
namespace {

constexpr const char* kIndex = "model.safetensors.index.json";
constexpr const char* kShard1 = "model-00001-of-00003.safetensors";
constexpr const char* kShard2 = "model-00002-of-00003.safetensors";

// Rewrites a safetensors file's header with `edit` applied to its JSON; the data stays the same.
template <class Edit>
void edit_header(const fs::path& file, Edit edit) {
  const std::string bytes = read_file(file);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  nlohmann::ordered_json header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  edit(header);
  std::string json = header.dump();
  json.resize((json.size() + 7) / 8 * 8, ' ');
  const std::uint64_t length = json.size();
  std::string out(reinterpret_cast<const char*>(&length), 8);
  write_file(file, out + json + bytes.substr(8 + n));
}

void edit_index(const fs::path& file, const std::function<void(nlohmann::ordered_json&)>& edit) {
  auto index = nlohmann::ordered_json::parse(read_file(file));
  edit(index);
  write_file(file, index.dump(2));
}

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ckpt_ = dir_.path() / "ckpt";
    const Result r = run({"save-random", ckpt_.string(), "--size", "8MB", "--max-shard-size", "3MB"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(fs::exists(ckpt_ / "model-00003-of-00003.safetensors"));
  }
  Result verify() const { return run({"verify", ckpt_.string()}); }
  nlohmann::json verify_json() const {
    const Result r = run({"verify", ckpt_.string(), "--json"});
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(r.status, j.at("valid").get<bool>() ? 0 : 1);
    return j;
  }
  // Exit status 1 and a "problem:" line holding every one of `texts`.
  void expect_problem(const std::vector<std::string>& texts) const {
    const Result r = verify();
    EXPECT_EQ(r.status, 1) << r.out << r.err;
    EXPECT_NE(r.out.find("result: INVALID"), std::string::npos) << r.out;
    std::istringstream lines(r.out);
    bool found = false;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("problem: ", 0) != 0) continue;
      found = found || std::all_of(texts.begin(), texts.end(), [&](const auto& t) { return line.find(t) != std::string::npos; });
    }
    EXPECT_TRUE(found) << "no problem line with all of the expected texts, first: " << texts.front() << "\n" << r.out;
  }
  TempDir dir_;
  fs::path ckpt_;
};

TEST_F(VerifyTest, GoodCheckpointIsValid) {
  const Result r = verify();
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("result: OK (3 files"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("problem:"), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const auto j = verify_json();
  EXPECT_TRUE(j.at("valid").get<bool>());
  EXPECT_EQ(j.at("files").size(), 3u);
  std::uint64_t total = 0;
  for (const auto& f : j.at("files")) {
    EXPECT_EQ(f.at("status"), "ok");
    EXPECT_EQ(f.at("xxh64").get<std::string>().size(), 16u);
    total += f.at("bytes").get<std::uint64_t>();
  }
  EXPECT_EQ(j.at("bytes_read").get<std::uint64_t>(), total);  // every byte was read
  // The index file, one shard alone.
  EXPECT_EQ(run({"verify", (ckpt_ / kIndex).string()}).status, 0);
  EXPECT_EQ(run({"verify", (ckpt_ / kShard2).string()}).status, 0);
}

TEST_F(VerifyTest, ChecksumsIdentifyTheBytes) {
  const auto before = verify_json();
  fs::copy(ckpt_, dir_.path() / "copy", fs::copy_options::recursive);
  const auto copy = nlohmann::json::parse(run({"verify", (dir_.path() / "copy").string(), "--json"}).out);
  EXPECT_EQ(copy.at("files"), before.at("files"));
  EXPECT_TRUE(before.at("checksums").at("manifest").get<bool>());
  // Flip one data byte: the file still parses, but the manifest written at save time says those
  // bytes changed, and names the tensor and the range.
  std::string bytes = read_file(ckpt_ / kShard2);
  bytes[bytes.size() - 5] ^= 0x40;
  write_file(ckpt_ / kShard2, bytes);
  const auto after = verify_json();
  EXPECT_FALSE(after.at("valid").get<bool>());
  const std::string problem = after.at("problems").at(0).get<std::string>();
  EXPECT_NE(problem.find(std::string("checksum: ") + kShard2 + ": tensor "), std::string::npos) << problem;
  EXPECT_NE(problem.find("do not match the manifest"), std::string::npos) << problem;
  // Without the manifest (a folder another tool wrote) the same bytes are only checked for form.
  fs::remove(ckpt_ / "model.safetensors.quicksave-manifest.json");
  EXPECT_TRUE(verify_json().at("valid").get<bool>());
  const auto no_manifest = verify_json();
  EXPECT_EQ(no_manifest.at("files").at(0).at("xxh64"), before.at("files").at(0).at("xxh64"));
  EXPECT_NE(no_manifest.at("files").at(1).at("xxh64"), before.at("files").at(1).at("xxh64"));
}

TEST_F(VerifyTest, TruncatedShard) {
  fs::resize_file(ckpt_ / kShard2, fs::file_size(ckpt_ / kShard2) - 100);
  expect_problem({kShard2, "incomplete"});
  const auto j = verify_json();
  EXPECT_EQ(j.at("files").at(1).at("status"), "invalid");
}

TEST_F(VerifyTest, WrongOffsetInAHeader) {
  edit_header(ckpt_ / kShard1, [](nlohmann::ordered_json& h) {
    for (auto& [name, info] : h.items()) {
      if (name == "__metadata__") continue;
      auto& offsets = info.at("data_offsets");
      if (offsets.at(0).get<std::uint64_t>() > 0) {  // the second tensor starts 2 bytes late
        offsets[0] = offsets.at(0).get<std::uint64_t>() + 2;
        break;
      }
    }
  });
  expect_problem({kShard1, "offset"});
}

TEST_F(VerifyTest, MissingShard) {
  fs::remove(ckpt_ / kShard2);
  expect_problem({"missing shard " + std::string(kShard2), "tensors to it"});
  EXPECT_EQ(verify_json().at("files").at(1).at("status"), "missing");
}

TEST_F(VerifyTest, IndexIsNotJson) {
  write_file(ckpt_ / kIndex, "{\"metadata\": {}, \"weight_map\": {\"a\": ");
  expect_problem({kIndex, "invalid index JSON"});
}

TEST_F(VerifyTest, IndexPathEscapesTheFolder) {
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"]["model.norm.weight"] = "../model-00003-of-00003.safetensors"; });
  expect_problem({"Invalid shard filename", "../model-00003-of-00003.safetensors"});
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"]["model.norm.weight"] = "/etc/passwd.safetensors"; });
  expect_problem({"Invalid shard filename", "/etc/passwd.safetensors"});
}

TEST_F(VerifyTest, IndexMissesATensorOfAShard) {
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"].erase("model.norm.weight"); });
  expect_problem({"tensor `model.norm.weight`", "is not in the index's weight_map"});
}

TEST_F(VerifyTest, IndexNamesATensorNoShardHas) {
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"]["ghost.weight"] = kShard1; });
  expect_problem({"tensor `ghost.weight`", kShard1, "has no tensor of that name"});
}

TEST_F(VerifyTest, IndexMapsATensorToTheWrongShard) {
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"]["model.norm.weight"] = kShard1; });
  expect_problem({"tensor `model.norm.weight`", "the index maps it to " + std::string(kShard1)});
}

TEST_F(VerifyTest, TensorInTwoShards) {
  fs::copy_file(ckpt_ / kShard1, ckpt_ / "model-00004-of-00004.safetensors");
  edit_index(ckpt_ / kIndex, [](auto& index) { index["weight_map"]["extra"] = "model-00004-of-00004.safetensors"; });
  expect_problem({"appears in both", kShard1, "model-00004-of-00004.safetensors"});
}

TEST_F(VerifyTest, TotalSize) {
  edit_index(ckpt_ / kIndex, [](auto& index) { index["metadata"]["total_size"] = -5; });
  expect_problem({"total_size is negative"});
  edit_index(ckpt_ / kIndex, [](auto& index) { index["metadata"]["total_size"] = "big"; });
  expect_problem({"index"});
  // A different (non-negative) figure loads everywhere: a warning only (once the checksum manifest,
  // which holds the index's hash, is gone: with it the edited index is a mismatch).
  fs::remove(ckpt_ / "model.safetensors.quicksave-manifest.json");
  edit_index(ckpt_ / kIndex, [](auto& index) { index["metadata"]["total_size"] = 12345; });
  const Result r = verify();
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("warning: index model.safetensors.index.json: metadata.total_size is 12345"), std::string::npos) << r.out;
}

TEST_F(VerifyTest, StrayShardIsAWarning) {
  fs::copy_file(ckpt_ / kShard1, ckpt_ / "model-00001-of-00002.safetensors");
  const Result r = verify();
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("warning: stray file model-00001-of-00002.safetensors"), std::string::npos) << r.out;
}

TEST(Verify, NoCheckpoint) {
  TempDir dir;
  Result r = run({"verify", dir.path().string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("problem: no safetensors checkpoint in"), std::string::npos) << r.out;
  r = run({"verify", (dir.path() / "absent").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("No such file or directory"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace quicksave::cli_test
