// The load engine (quicksave/loader.hpp) over real checkpoints written by save_state_dict: every
// dtype, sharded and single files, reads cut into many pieces, key subsets, O_DIRECT through the
// pool, both I/O backends; and what must fail cleanly: a flipped byte under verify (named), a
// truncated file (at open, and after open), targets that do not match.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <sys/stat.h>

#include "quicksave/error.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/safetensors.hpp"
#include "quicksave/save.hpp"
#include "test_support.hpp"

namespace quicksave {
namespace {

using testing::TempDir;
using testing::thrown_by;
namespace fs = std::filesystem;

struct Saved {
  std::map<std::string, std::vector<std::byte>> bytes;
  std::map<std::string, std::pair<DType, std::vector<std::int64_t>>> layout;
};

// One tensor of every dtype (an even element count, so 4- and 6-bit dtypes fill whole bytes),
// plus a large one that spans several reads, written as several shards with checksums.
Saved save_checkpoint(const fs::path& dir, const std::string& max_shard_size = "4KB") {
  Saved saved;
  std::vector<TensorRef> refs;
  const auto add = [&](const std::string& name, DType dtype, std::vector<std::int64_t> shape, std::uint64_t seed) {
    std::vector<std::uint64_t> unsigned_shape(shape.begin(), shape.end());
    auto bytes = testing::pattern(seed, tensor_nbytes(dtype, unsigned_shape));
    saved.layout[name] = {dtype, shape};
    auto& stored = saved.bytes[name] = std::move(bytes);
    TensorRef ref;
    ref.name = name;
    ref.dtype = dtype;
    ref.shape = shape;
    ref.data = stored.data();
    ref.storage_base = stored.data();
    ref.storage_nbytes = stored.size();
    refs.push_back(ref);
  };
  for (int d = 0; d < kDTypeCount; ++d) {
    const auto dtype = static_cast<DType>(d);
    add("t." + std::string(dtype_name(dtype)), dtype, {4, 8}, 100 + d);
  }
  add("big.weight", DType::F32, {64, 1000}, 7);  // 256,000 bytes: many 4 KiB reads
  add("empty", DType::F16, {0, 3}, 8);
  SaveOptions options;
  options.max_shard_size = ShardSize(max_shard_size);
  options.checksums = true;
  save_state_dict(refs, dir, options);
  return saved;
}

struct Buffers {
  std::map<std::string, std::vector<std::byte>> memory;
  std::vector<LoadTarget> targets;
};

Buffers targets_for(const Saved& saved, const std::function<bool(const std::string&)>& wanted = nullptr) {
  Buffers out;
  for (const auto& [name, bytes] : saved.bytes) {
    if (wanted && !wanted(name)) continue;
    auto& memory = out.memory[name] = std::vector<std::byte>(bytes.size(), std::byte{0xEE});
    const auto& [dtype, shape] = saved.layout.at(name);
    out.targets.push_back(LoadTarget{name, memory.data(), dtype, shape});
  }
  return out;
}

void flip_byte(const fs::path& file, std::uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x10));
}

struct Setup {
  IoBackendChoice backend;
  bool direct;
};

std::string setup_name(const ::testing::TestParamInfo<Setup>& info) {
  return std::string(info.param.backend == IoBackendChoice::posix ? "posix" : "io_uring") + (info.param.direct ? "_direct" : "_buffered");
}

class LoaderTest : public ::testing::TestWithParam<Setup> {
 protected:
  LoaderOptions options(std::uint64_t read_bytes = 4096) const {
    LoaderOptions o;
    o.io_backend = GetParam().backend;
    o.direct_io = GetParam().direct;
    o.read_bytes = read_bytes;
    o.pool_bytes = 4 * (read_bytes + 8192);  // a small pool: buffers are reused many times over
    o.queue_depth = 8;
    return o;
  }
};

TEST_P(LoaderTest, EveryDtypeShardedOrNotLoadsByteForByteAndVerifies) {
  for (const std::string shard_size : {"4KB", "5GB"}) {
    TempDir dir;
    const Saved saved = save_checkpoint(dir.path(), shard_size);
    const LoadSource source = LoadSource::open(dir.path(), LoadSourceOptions{.verify = true});
    EXPECT_EQ(source.tensors().size(), saved.bytes.size());
    EXPECT_EQ(source.files().size() > 1, shard_size == "4KB");
    Buffers buffers = targets_for(saved);
    Loader loader(options());
    const LoadHandle handle = loader.load_async(source, buffers.targets, LoadOptions{.verify = true});
    handle.wait();
    for (const auto& [name, bytes] : saved.bytes) EXPECT_EQ(buffers.memory[name], bytes) << name << " (shards of " << shard_size << ")";
    const LoadProgress progress = handle.progress();
    EXPECT_EQ(progress.bytes_read, progress.bytes_total);
    EXPECT_EQ(progress.bytes_verified, progress.bytes_total);
    EXPECT_GT(progress.bytes_total, 256'000u);
  }
}

TEST_P(LoaderTest, ASubsetReadsOnlyItsTensorsAndLeavesOtherMemoryAlone) {
  TempDir dir;
  const Saved saved = save_checkpoint(dir.path());
  const LoadSource source = LoadSource::open(dir.path());
  Buffers buffers = targets_for(saved, [](const std::string& name) { return name == "big.weight" || name == "t.BF16"; });
  ASSERT_EQ(buffers.targets.size(), 2u);
  Loader loader(options());
  const LoadHandle handle = loader.load_async(source, buffers.targets);
  handle.wait();
  EXPECT_EQ(buffers.memory["big.weight"], saved.bytes.at("big.weight"));
  EXPECT_EQ(buffers.memory["t.BF16"], saved.bytes.at("t.BF16"));
  EXPECT_EQ(handle.progress().bytes_total, saved.bytes.at("big.weight").size() + saved.bytes.at("t.BF16").size());
}

TEST_P(LoaderTest, AKeyFilterOpensOnlyTheShardsItNeeds) {
  TempDir dir;
  const Saved saved = save_checkpoint(dir.path());
  const std::string big_file = LoadSource::open(dir.path()).find("big.weight")->file;
  const std::string other_file = LoadSource::open(dir.path()).find("t.F64")->file;
  ASSERT_NE(big_file, other_file);
  fs::remove(dir.path() / other_file);
  const auto only_big = [](const std::string& name) { return name == "big.weight"; };
  const LoadSource source = LoadSource::open(dir.path(), LoadSourceOptions{.verify = true, .key_filter = only_big});
  ASSERT_EQ(source.tensors().size(), 1u);
  EXPECT_EQ(source.files().size(), 1u);
  Buffers buffers = targets_for(saved, only_big);
  Loader loader(options());
  loader.load(source, buffers.targets, LoadOptions{.verify = true});
  EXPECT_EQ(buffers.memory["big.weight"], saved.bytes.at("big.weight"));
  // The whole checkpoint needs the missing shard.
  EXPECT_EQ(thrown_by([&] { LoadSource::open(dir.path()); }).code(), ErrorCode::not_found);
}

TEST_P(LoaderTest, AFlippedByteFailsAVerifiedLoadNamingFileTensorAndRange) {
  TempDir dir;
  const Saved saved = save_checkpoint(dir.path());
  const LoadSource clean = LoadSource::open(dir.path());
  const CheckpointTensor* big = clean.find("big.weight");
  ASSERT_NE(big, nullptr);
  // The tensor's bytes start after the header: flip one in the middle of the tensor's data.
  const fs::path shard = dir.path() / big->file;
  const auto size = fs::file_size(shard);
  flip_byte(shard, size - 1000);  // big.weight is the shard's only (and last) tensor
  const LoadSource source = LoadSource::open(dir.path(), LoadSourceOptions{.verify = true});
  Buffers buffers = targets_for(saved);
  Loader loader(options());
  const Error error = thrown_by([&] { loader.load(source, buffers.targets, LoadOptions{.verify = true}); });
  EXPECT_EQ(error.code(), ErrorCode::corrupt);
  EXPECT_NE(std::string(error.what()).find(big->file), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find("tensor big.weight bytes ["), std::string::npos) << error.what();
  // Unverified, the same load succeeds: the flip is only found by hashing.
  Buffers again = targets_for(saved);
  loader.load(LoadSource::open(dir.path()), again.targets);
  EXPECT_NE(again.memory["big.weight"], saved.bytes.at("big.weight"));
}

TEST_P(LoaderTest, AFileTruncatedBeforeOrAfterOpeningFailsWithTheFileNamed) {
  TempDir dir;
  const Saved saved = save_checkpoint(dir.path());
  const LoadSource source = LoadSource::open(dir.path());
  const fs::path shard = dir.path() / source.find("big.weight")->file;
  fs::resize_file(shard, fs::file_size(shard) - 5000);
  // After open: the read that reaches the end says so.
  Buffers buffers = targets_for(saved);
  Loader loader(options());
  const Error late = thrown_by([&] { loader.load(source, buffers.targets); });
  EXPECT_EQ(late.code(), ErrorCode::corrupt);
  EXPECT_NE(std::string(late.what()).find(shard.string()), std::string::npos) << late.what();
  // Before: the header no longer matches the file's size.
  const Error early = thrown_by([&] { LoadSource::open(dir.path()); });
  EXPECT_EQ(early.code(), ErrorCode::corrupt);
  EXPECT_NE(std::string(early.what()).find(shard.filename().string()), std::string::npos) << early.what();
}

INSTANTIATE_TEST_SUITE_P(Backends, LoaderTest,
                         ::testing::Values(Setup{IoBackendChoice::posix, false}, Setup{IoBackendChoice::io_uring, false},
                                           Setup{IoBackendChoice::posix, true}, Setup{IoBackendChoice::io_uring, true}),
                         setup_name);

TEST(LoaderTargets, MismatchedUnknownAndRepeatedTargetsAreRefusedBeforeAnyRead) {
  TempDir dir;
  const Saved saved = save_checkpoint(dir.path());
  const LoadSource source = LoadSource::open(dir.path());
  Loader loader;
  std::vector<std::byte> memory(4096);
  const auto refused = [&](std::vector<LoadTarget> targets) { return thrown_by([&] { loader.load_async(source, targets); }); };
  EXPECT_EQ(refused({LoadTarget{"t.F32", memory.data(), DType::F16, {4, 8}}}).code(), ErrorCode::invalid_argument);
  const Error shape = refused({LoadTarget{"t.F32", memory.data(), DType::F32, {8, 4}}});
  EXPECT_NE(std::string(shape.what()).find("F32 [4, 8] in the checkpoint, the target is F32 [8, 4]"), std::string::npos) << shape.what();
  EXPECT_EQ(refused({LoadTarget{"nope", memory.data(), DType::F32, {4, 8}}}).code(), ErrorCode::not_found);
  EXPECT_EQ(refused({LoadTarget{"t.F32", memory.data(), DType::F32, {4, 8}}, LoadTarget{"t.F32", memory.data(), DType::F32, {4, 8}}}).code(),
            ErrorCode::invalid_argument);
  EXPECT_EQ(refused({LoadTarget{"t.F32", nullptr, DType::F32, {4, 8}}}).code(), ErrorCode::invalid_argument);
  // verify needs the manifest, read when the source is opened.
  EXPECT_EQ(thrown_by([&] { loader.load_async(source, {}, LoadOptions{.verify = true}); }).code(), ErrorCode::invalid_argument);
}

TEST(LoaderSource, VerifyWithoutAManifestIsNotFoundAndAMissingPathToo) {
  TempDir dir;
  TensorRef ref;
  std::vector<float> values(16, 1.0f);
  ref.name = "w";
  ref.shape = {16};
  ref.data = ref.storage_base = values.data();
  ref.storage_nbytes = 64;
  SaveOptions options;
  options.checksums = false;
  save_state_dict({ref}, dir.path(), options);
  EXPECT_NO_THROW(LoadSource::open(dir.path()));
  EXPECT_EQ(thrown_by([&] { LoadSource::open(dir.path(), LoadSourceOptions{.verify = true}); }).code(), ErrorCode::not_found);
  EXPECT_EQ(thrown_by([&] { LoadSource::open(dir.path() / "missing"); }).code(), ErrorCode::not_found);
  // A single file opens too, and a FIFO posing as a shard is refused, never blocked on.
  EXPECT_EQ(LoadSource::open(dir.path() / "model.safetensors").tensors().size(), 1u);
  const fs::path fifo = dir.path() / "fifo.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(thrown_by([&] { LoadSource::open(fifo); }).code(), ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace quicksave
