// Interrupted saves: a real `quicksave save-random` killed with SIGKILL in the middle (in-place
// and directory mode), a journal left by a crash, and the files of a save that still holds the
// folder's lock. verify reports them without changing anything; recover repairs them and says
// what it did, and leaves alone whatever a save in progress holds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

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
  EXPECT_NE(v.out.find("recovery"), std::string::npos) << v.out;
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
  EXPECT_TRUE(fs::is_empty(dir.path()));  // the crashed save's lock file went with its recovery
}

TEST(Interrupted, JournalOfAnInterruptedSwitchIsReportedThenRolledBack) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  ASSERT_EQ(run({"save-random", ckpt.string(), "--size", "1MB"}).status, 0);
  const std::string before = read_file(ckpt / "model.safetensors");
  // A switch-over that wrote its journal and crashed before its commit mark (commit/commit.cpp,
  // B.2-B.6), with nothing switched yet.
  const std::string journal = ".qs-00000000005eed00.journal";
  write_file(ckpt / journal,
             "quicksave-journal 2\ntag\t.qs-00000000005eed00\npattern\tmodel{suffix}.safetensors\nwriter\thost=h boot=b pid=1\nend\t0\n");
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 1);
  EXPECT_NE(v.out.find("journal " + journal), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("rolls back"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("written by host=h boot=b pid=1"), std::string::npos) << v.out;
  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("rolled back"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(ckpt / journal));
  EXPECT_EQ(read_file(ckpt / "model.safetensors"), before);
  EXPECT_EQ(run({"verify", ckpt.string()}).status, 0);
}

TEST(Interrupted, LeftoversOfASaveHoldingTheLockAreOnlyAWarningAndLeftAlone) {
  TempDir dir;
  const fs::path ckpt = dir.path() / "ckpt";
  ASSERT_EQ(run({"save-random", ckpt.string(), "--size", "1MB"}).status, 0);
  // This test holds the folder's writer lock (a classic fcntl lock conflicts with the OFD lock
  // quicksave takes), as a running save would, and has a staging directory beside it.
  const fs::path lock_file = dir.path() / ".ckpt.quicksave-lock";
  const int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "tag=.qs-0123456789abcdef host=test", 34), 34);
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  ASSERT_EQ(::fcntl(fd, F_SETLK, &lock), 0);
  const fs::path staging = dir.path() / ".ckpt.qs-0123456789abcdef.tmp";
  fs::create_directories(staging);
  const Result v = run({"verify", ckpt.string()});
  EXPECT_EQ(v.status, 0) << v.out;
  EXPECT_NE(v.out.find("warning: interrupted save"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("a save is in progress"), std::string::npos) << v.out;
  const Result r = run({"recover", ckpt.string()});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("left alone: everything: a save holds"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("host=test"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(staging));
  const Result busy = run({"save-random", ckpt.string(), "--size", "1MB"});
  EXPECT_NE(busy.status, 0);
  EXPECT_NE((busy.out + busy.err).find("another save holds it"), std::string::npos) << busy.out << busy.err;
  ::close(fd);  // the "save" ends: recovery may now act
  const Result after = run({"recover", ckpt.string()});
  EXPECT_NE(after.out.find("removed staging directory .ckpt.qs-0123456789abcdef.tmp"), std::string::npos) << after.out;
  EXPECT_FALSE(fs::exists(staging));
}

}  // namespace
}  // namespace quicksave::cli_test
