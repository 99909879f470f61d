// The commit protocol's three modes, stale-file handling and rollback on failures.
#include <gtest/gtest.h>

#include <fstream>

#include "commit/checkpoint_fixture.hpp"
#include "commit/commit.hpp"
#include "commit/fault_file_system.hpp"
#include "commit/names.hpp"
#include "commit/recovery.hpp"
#include "engine/sync_writer.hpp"
#include "io/fault_backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

using testing::checkpoint_generation;
using testing::has_leftovers;
using testing::SyntheticStateDict;
using testing::TempDir;
namespace fs = std::filesystem;

void touch(const fs::path& p, const std::string& text = "x") { std::ofstream(p) << text; }

SaveOptions sharded(std::int64_t max_bytes) {
  SaveOptions o;
  o.max_shard_size = max_bytes;
  return o;
}

TEST(IsPatternOutput, ExactNamesOnly) {
  const std::string p = "model{suffix}.safetensors";
  for (const char* yes : {"model.safetensors", "model-00001-of-00003.safetensors", "model-123456-of-123456.safetensors",
                          "model.safetensors.index.json", "model-00003-of-00003.safetensors.index.json"}) {
    EXPECT_TRUE(commit::is_pattern_output(yes, p)) << yes;
  }
  for (const char* no : {"model.safetensors.old", "model-1-of-3.safetensors", "xmodel.safetensors", "model.safetensorsX",
                         "pytorch_model.bin", "model-00001-of-00003.safetensors.bak", "MODEL.SAFETENSORS"}) {
    EXPECT_FALSE(commit::is_pattern_output(no, p)) << no;
  }
}

TEST(Commit, FreshDirectoryIsCreatedAtomically) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "a" / "step-1";
  SyntheticStateDict sd(1, 4, 1000);
  const auto result = save_state_dict(sd.tensors, dir, sharded(8000));
  EXPECT_EQ(result.commit_mode, CommitMode::fresh);
  EXPECT_EQ(result.files.size(), 3u);  // 2 shards + index
  EXPECT_EQ(checkpoint_generation(dir, 4), 1);
  EXPECT_FALSE(has_leftovers(dir));
}

TEST(Commit, TrailingSeparatorNamesTheSameFolder) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  save_state_dict(SyntheticStateDict(1, 2, 100).tensors, dir.string() + "/");
  save_state_dict(SyntheticStateDict(2, 2, 100).tensors, dir.string() + "/");
  EXPECT_EQ(checkpoint_generation(dir, 2), 2);
  EXPECT_FALSE(has_leftovers(dir));
  auto fs = commit::make_posix_file_system();
  EXPECT_TRUE(commit::find_leftovers(*fs, dir.string() + "/").empty());
}

TEST(Commit, CheckpointOnlyDirectoryIsExchanged) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  save_state_dict(SyntheticStateDict(1, 6, 1000).tensors, dir, sharded(8000));  // 3 shards
  ASSERT_TRUE(fs::exists(dir / "model-00003-of-00003.safetensors"));
  const auto result = save_state_dict(SyntheticStateDict(2, 6, 1000).tensors, dir, sharded(12000));  // 2 shards
  EXPECT_TRUE(result.commit_mode == CommitMode::exchange || result.commit_mode == CommitMode::in_place) << to_string(result.commit_mode);
  EXPECT_EQ(checkpoint_generation(dir, 6), 2);
  EXPECT_FALSE(fs::exists(dir / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(has_leftovers(dir));
}

TEST(Commit, ModelFolderWithOtherFilesIsSwitchedInPlace) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "model";
  fs::create_directories(dir);
  touch(dir / "config.json", "{}");
  touch(dir / "model.safetensors.old", "keep me");
  touch(dir / "pytorch_model.bin", "other format");
  save_state_dict(SyntheticStateDict(1, 6, 1000).tensors, dir, sharded(8000));
  const auto result = save_state_dict(SyntheticStateDict(2, 6, 1000).tensors, dir, SaveOptions{});  // single file now
  EXPECT_EQ(result.commit_mode, CommitMode::in_place);
  EXPECT_EQ(checkpoint_generation(dir, 6), 2);
  for (const char* kept : {"config.json", "model.safetensors.old", "pytorch_model.bin"}) EXPECT_TRUE(fs::exists(dir / kept)) << kept;
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00003.safetensors"));
  EXPECT_EQ(result.removed_stale.size(), 4u);  // 3 old shards + old index
  EXPECT_FALSE(has_leftovers(dir));
}

TEST(Commit, NotMainProcessRemovesNothing) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "model";
  save_state_dict(SyntheticStateDict(1, 6, 1000).tensors, dir, sharded(8000));
  SaveOptions options;
  options.is_main_process = false;
  const auto result = save_state_dict(SyntheticStateDict(2, 6, 1000).tensors, dir, options);
  EXPECT_EQ(result.commit_mode, CommitMode::in_place);
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
}

// Every failing namespace or data operation: the save throws, the previous checkpoint is intact
// byte for byte, and no temporary is left.
TEST(Commit, AnyInjectedFaultLeavesThePreviousCheckpoint) {
  const io::FaultOp ops[] = {io::FaultOp::create, io::FaultOp::write, io::FaultOp::sync, io::FaultOp::rename,
                             io::FaultOp::exchange, io::FaultOp::make_directory, io::FaultOp::sync_directory,
                             io::FaultOp::write_file, io::FaultOp::hard_link, io::FaultOp::remove, io::FaultOp::lock};
  for (const bool with_config : {false, true}) {
    for (const auto op : ops) {
      for (int nth = 1; nth <= 3; ++nth) {
        SCOPED_TRACE("op " + std::to_string(static_cast<int>(op)) + " nth " + std::to_string(nth) + (with_config ? " in-place" : ""));
        TempDir tmp;
        const fs::path dir = tmp.path() / "ckpt";
        save_state_dict(SyntheticStateDict(1, 6, 1000).tensors, dir, sharded(8000));
        if (with_config) touch(dir / "config.json");
        auto faults = std::make_shared<io::FaultPlan>(io::FaultSpec{.op = op, .kind = io::FaultKind::eio, .nth = nth});
        io::FaultBackend faulty(io::make_posix_backend(1), faults);
        commit::FaultFileSystem faulty_fs(commit::make_posix_file_system(), faults);
        const auto plan = plan::make_save_plan(SyntheticStateDict(2, 6, 1000).tensors, sharded(12000));
        bool threw = false;
        try {
          engine::write_plan_sync(plan, dir, sharded(12000), faulty, faulty_fs);
        } catch (const Error& e) {
          threw = true;
          EXPECT_EQ(e.errno_value(), EIO) << e.what();
        }
        if (threw) {
          EXPECT_TRUE(faulty.fired());  // a fault after the commit point cannot undo the commit
        }
        EXPECT_EQ(checkpoint_generation(dir, 6), threw ? 1 : 2);
        // A failed unlink of a backup or stale file after the commit point (or during a roll-back)
        // leaves it for the next recovery, which must then finish without changing the generation.
        if (has_leftovers(dir)) {
          EXPECT_EQ(op, io::FaultOp::remove);
          recover_checkpoint(dir);
          EXPECT_EQ(checkpoint_generation(dir, 6), threw ? 1 : 2);
        }
        EXPECT_FALSE(has_leftovers(dir));
      }
    }
  }
}

}  // namespace
}  // namespace quicksave
