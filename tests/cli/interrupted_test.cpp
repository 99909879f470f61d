// Interrupted saves: a real `quicksave save-random` killed with SIGKILL in the middle (in-place
// and directory mode), leftovers of a dead process and of a running one. verify reports them
// without changing anything; recover repairs them and says what it did.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "cli_runner.hpp"

namespace quicksave::cli_test {
namespace {

// True when an entry of `dir` starts with `prefix`.
bool has_entry_starting_with(const fs::path& dir, const std::string& prefix) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// Starts a big save into `target` and SIGKILLs it as soon as a temporary named `prefix...`
// appears in `watch`. Returns false (and says why) when the save ended before that.
::testing::AssertionResult kill_save_midway(const fs::path& target, const fs::path& watch, const std::string& prefix) {
  TempDir capture;
  const pid_t pid = spawn({"save-random", target.string(), "--size", "256MB", "--max-shard-size", "64MB", "--seed", "9"}, capture.path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!has_entry_starting_with(watch, prefix)) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return ::testing::AssertionFailure() << "the save ended before it could be killed";
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      wait_for(pid, capture.path());
      return ::testing::AssertionFailure() << "no temporary appeared";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid, SIGKILL);
  const Result r = wait_for(pid, capture.path());
  if (r.status != 128 + SIGKILL) return ::testing::AssertionFailure() << "exit status " << r.status;
  return ::testing::AssertionSuccess();
}

pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

TEST(Interrupted, KilledInPlaceSaveIsReportedUnchangedThenRolledBack) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  fs::create_directories(ckpt);
  write_file(ckpt / "config.json", "{}");  // another file: the save switches files over in place
  ASSERT_EQ(run({"save-random", ckpt.string(), "--size", "8MB", "--max-shard-size", "3MB"}).status, 0);
  const std::string original = read_file(ckpt / "model-00001-of-00003.safetensors");
  ASSERT_TRUE(kill_save_midway(ckpt, ckpt, ".qs-"));

  const std::string before = listing(dir.path());
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 1) << v.out;
  EXPECT_NE(v.out.find("problem: interrupted save .qs-"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("no longer running"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("quicksave recover"), std::string::npos) << v.out;
  EXPECT_EQ(listing(dir.path()), before) << "verify changed the folder";
  const Result i = run({"inspect", ckpt.string()});
  EXPECT_EQ(i.status, 0);
  EXPECT_NE(i.out.find("warning: interrupted save"), std::string::npos) << i.out;
  EXPECT_EQ(listing(dir.path()), before) << "inspect changed the folder";

  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("recovered an interrupted save"), std::string::npos) << r.out;
  EXPECT_FALSE(has_entry_starting_with(ckpt, ".qs-"));
  const Result after = run({"verify", ckpt.string()});
  EXPECT_EQ(after.status, 0) << after.out;
  EXPECT_EQ(read_file(ckpt / "model-00001-of-00003.safetensors"), original);  // the previous checkpoint, intact
  EXPECT_TRUE(fs::exists(ckpt / "config.json"));
  EXPECT_NE(run({"recover", ckpt.string()}).out.find("nothing to recover"), std::string::npos);
}

TEST(Interrupted, KilledFirstSaveLeavesAStagingDirectory) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  ASSERT_TRUE(kill_save_midway(ckpt, dir.path(), ".ckpt.qs-"));
  const std::string before = listing(dir.path());
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 1);
  EXPECT_NE(v.out.find("problem: No such file or directory"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("staging directory .ckpt.qs-"), std::string::npos) << v.out;
  EXPECT_EQ(listing(dir.path()), before);
  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("removed staging directory .ckpt.qs-"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Interrupted, JournalOfADeadProcessIsReportedThenRolledForward) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  ASSERT_EQ(run({"save-random", ckpt.string(), "--size", "1MB"}).status, 0);
  // A switch-over that reached its commit point (io/commit.cpp, B.6) with nothing left to clean.
  const std::string journal = ".qs-" + std::to_string(dead_pid()) + "-5eed.journal";
  write_file(ckpt / journal, "quicksave-journal 1\nend\t0\ncommitted\n");
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 1);
  EXPECT_NE(v.out.find("journal " + journal), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("rolls forward"), std::string::npos) << v.out;
  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("rolled forward"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(ckpt / journal));
  EXPECT_EQ(run({"verify", ckpt.string()}).status, 0);
}

TEST(Interrupted, LeftoversOfARunningSaveAreOnlyAWarningAndLeftAlone) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  ASSERT_EQ(run({"save-random", ckpt.string(), "--size", "1MB"}).status, 0);
  const fs::path staging = dir.path() / (".ckpt.qs-" + std::to_string(::getpid()) + "-abc123.tmp");  // this test is alive
  fs::create_directories(staging);
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 0) << v.out;
  EXPECT_NE(v.out.find("warning: interrupted save"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("still running"), std::string::npos) << v.out;
  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("left alone"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(staging));
}

}  // namespace
}  // namespace quicksave::cli_test
