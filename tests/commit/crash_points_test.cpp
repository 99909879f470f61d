// Crash-point enumeration: not random kills, but a kill at every point a save (or a recovery) can
// be interrupted, in turn.
//   - posix backend: strace kills crash_saver just before its Nth call of each file-system system
//     call (open, write, pwrite, rename, link, unlink, fsync, fdatasync, ftruncate, mkdir), for
//     every N until the save completes unkilled;
//   - io_uring backend: the FaultPlan ends the process (_exit) just before the Nth operation of the
//     data seam or the file-system seam, for every N;
//   - recovery: a crashed in-place save is recovered by a process killed at each of its system
//     calls in turn, then recovered again.
// Each of the three modes (fresh, exchange, in-place with config.json). After each kill: loads
// read exactly the old or exactly the new checkpoint (without writing), recovery leaves exactly
// the same one with no leftover, and every checksum matches. The counts are printed (the closing
// note quotes them).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "commit/checkpoint_fixture.hpp"
#include "quicksave/save.hpp"
#include "quicksave/verify.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::checkpoint_generation;
using testing::has_leftovers;
using testing::TempDir;

constexpr int kTensors = 6;  // crash_saver's state dict

struct ProcessRun {
  bool completed = false;  // printed "saved" (or finished recovering) and exited 0
  std::string output;
};

// Runs argv (no shell), collecting stdout; completed when it exits 0.
ProcessRun run(const std::vector<std::string>& argv) {
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out[1]);
  ProcessRun r;
  char buffer[4096];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof buffer)) > 0;) r.output.append(buffer, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.completed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return r;
}

std::vector<std::string> under_strace(const std::string& syscall, int n, std::vector<std::string> command) {
  std::vector<std::string> argv = {QUICKSAVE_STRACE, "-f", "-qq", "-o", "/dev/null",
                                   "-e", "trace=" + syscall, "-e", "inject=" + syscall + ":signal=KILL:when=" + std::to_string(n), "--"};
#if defined(__SANITIZE_ADDRESS__)
  // LeakSanitizer cannot run under ptrace: it would fail every traced run at exit (make sanitize).
  argv.insert(argv.end() - 1, {"-E", "ASAN_OPTIONS=detect_leaks=0"});
#endif
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

enum class Mode { fresh, exchange, in_place };
const char* name_of(Mode m) { return m == Mode::fresh ? "fresh" : m == Mode::exchange ? "exchange" : "in_place"; }

// The folder before the save under test: nothing (fresh), generation 1 in 3 shards (exchange), or
// the same with config.json beside it (in place). The save under test writes generation 2 in 2.
fs::path prepare(const TempDir& tmp, Mode mode) {
  const fs::path dir = tmp.path() / "ckpt";
  if (mode != Mode::fresh) {
    const ProcessRun first = run({QUICKSAVE_CRASH_SAVER, "save", dir.string(), "1", "--sharded", "3"});
    EXPECT_TRUE(first.completed) << first.output;
    if (mode == Mode::in_place) std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\"}";
  }
  return dir;
}

std::vector<std::string> save_command(const fs::path& dir, const std::string& backend, int crash_at = 0) {
  std::vector<std::string> c = {QUICKSAVE_CRASH_SAVER, "save", dir.string(), "2", "--sharded", "2", "--backend", backend};
  if (crash_at > 0) {
    c.push_back("--crash-at");
    c.push_back(std::to_string(crash_at));
  }
  return c;
}

// A listing of every file under `root` with its size and modification time: a load must change none.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    std::string what = e.is_regular_file() ? std::to_string(e.file_size()) : "dir";
    what += "@" + std::to_string(fs::last_write_time(e.path()).time_since_epoch().count());
    out[fs::relative(e.path(), root).string()] = what;
  }
  return out;
}

struct Tally {
  int runs = 0, old_checkpoint = 0, new_checkpoint = 0, broken = 0, leftovers = 0;
  void print(const std::string& what) const {
    std::printf("%s: %d runs, %d old, %d new, %d broken, %d leftovers\n", what.c_str(), runs, old_checkpoint, new_checkpoint,
                broken, leftovers);
  }
};

// After a kill: what loads read (without writing), then what recovery leaves; both must be the
// same complete generation, old or new, with matching checksums and no leftover.
void check_after_kill(const fs::path& dir, Mode mode, bool save_completed, Tally& tally, const std::string& where) {
  SCOPED_TRACE(where);
  ++tally.runs;
  const int old_generation = mode == Mode::fresh ? 0 : 1;
  std::optional<int> as_loaded;
  if (fs::exists(dir)) {
    const auto before = snapshot(dir.parent_path());
    as_loaded = fs::exists(dir) ? checkpoint_generation(dir, kTensors, /*as_loaded=*/true) : std::nullopt;
    EXPECT_EQ(snapshot(dir.parent_path()), before) << "a load changed the folder";
  }
  const auto actions = recover_checkpoint(dir);
  for (const auto& a : actions) EXPECT_EQ(a.rfind("left alone", 0), std::string::npos) << a;
  std::optional<int> recovered;
  if (fs::exists(dir)) recovered = checkpoint_generation(dir, kTensors);
  const int found = recovered.value_or(0);  // no folder at all: the "old" state of a fresh save
  if (!fs::exists(dir) && mode != Mode::fresh) {
    ADD_FAILURE() << "the checkpoint folder is gone";
  }
  const bool ok_generation = found == old_generation || found == 2;
  if (!ok_generation || (fs::exists(dir) && !recovered)) {
    ++tally.broken;
    ADD_FAILURE() << "after recovery: generation " << found;
  } else {
    (found == 2 ? tally.new_checkpoint : tally.old_checkpoint)++;
  }
  if (save_completed) EXPECT_EQ(found, 2) << "the save reported success";
  if (fs::exists(dir)) {
    EXPECT_EQ(as_loaded.value_or(-1), found) << "loads read another checkpoint than recovery left";
    if (has_leftovers(dir)) {
      ++tally.leftovers;
      ADD_FAILURE() << "leftovers after recovery";
    }
    const ChecksumReport checksums = verify_checksums(dir);
    EXPECT_TRUE(checksums.manifest_found);
    for (const auto& m : checksums.mismatches) ADD_FAILURE() << m.what;
    if (mode == Mode::in_place) {
      EXPECT_TRUE(fs::exists(dir / "config.json"));
    }
  } else if (fs::exists(dir.parent_path())) {
    for (const auto& e : fs::directory_iterator(dir.parent_path())) {
      EXPECT_EQ(e.path().filename().string().find(".qs-"), std::string::npos) << "staging left: " << e.path();
    }
  }
}

constexpr std::array kSyscalls = {"openat", "write", "pwrite64", "rename", "renameat2", "link", "linkat", "unlink",
                                  "unlinkat", "fsync", "fdatasync", "ftruncate", "mkdir", "rmdir", "fallocate"};

class CrashPoints : public ::testing::TestWithParam<Mode> {};

TEST_P(CrashPoints, KillBeforeEverySystemCallOfAPosixSave) {
  Tally tally;
  for (const std::string syscall : kSyscalls) {
    for (int n = 1;; ++n) {
      TempDir tmp;
      const fs::path dir = prepare(tmp, GetParam());
      const ProcessRun r = run(under_strace(syscall, n, save_command(dir, "posix")));
      const bool completed = r.completed && r.output.find("saved") != std::string::npos;
      check_after_kill(dir, GetParam(), completed, tally, syscall + " #" + std::to_string(n));
      if (completed || n > 400) break;  // the save made fewer than n such calls
      if (::testing::Test::HasFailure()) return tally.print(std::string(name_of(GetParam())) + " posix (stopped at first failure)");
    }
  }
  tally.print(std::string("crash points, ") + name_of(GetParam()) + ", posix, strace");
  EXPECT_GT(tally.old_checkpoint, 0);
  EXPECT_GT(tally.new_checkpoint, 0);
}

TEST_P(CrashPoints, CrashBeforeEveryOperationOfAnIoUringSave) {
  {
    TempDir probe;
    const ProcessRun r = run(save_command(probe.path() / "probe", "io_uring"));
    if (r.output.find("io_uring") != std::string::npos && !r.completed) GTEST_SKIP() << "io_uring unavailable: " << r.output;
  }
  Tally tally;
  for (int n = 1;; ++n) {
    TempDir tmp;
    const fs::path dir = prepare(tmp, GetParam());
    const ProcessRun r = run(save_command(dir, "io_uring", n));
    const bool completed = r.completed && r.output.find("saved") != std::string::npos;
    check_after_kill(dir, GetParam(), completed, tally, "operation #" + std::to_string(n));
    if (completed || n > 2000 || ::testing::Test::HasFailure()) break;
  }
  tally.print(std::string("crash points, ") + name_of(GetParam()) + ", io_uring, injected _exit");
  EXPECT_GT(tally.old_checkpoint, 0);
  EXPECT_GT(tally.new_checkpoint, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, CrashPoints, ::testing::Values(Mode::fresh, Mode::exchange, Mode::in_place),
                         [](const auto& info) { return std::string(name_of(info.param)); });

// A recovery killed at any of its system calls, then run again, still ends in exactly one complete
// checkpoint. The crashed states are those of an in-place save killed at each rename and unlink
// (inside the switch and inside the roll-forward).
TEST(CrashPointsInRecovery, KillRecoveryBeforeEverySystemCallThenRecoverAgain) {
  Tally tally;
  int crashed_states = 0;
  for (const std::string save_syscall : {"rename", "unlink"}) {
    for (int k = 1;; ++k) {
      TempDir probe;
      const fs::path probe_dir = prepare(probe, Mode::in_place);
      const ProcessRun save = run(under_strace(save_syscall, k, save_command(probe_dir, "posix")));
      if (save.completed) break;
      if (k > 100) break;
      ++crashed_states;
      for (const std::string syscall : {"rename", "unlink", "fsync"}) {
        for (int n = 1;; ++n) {
          TempDir tmp;
          const fs::path dir = prepare(tmp, Mode::in_place);
          const ProcessRun crashed = run(under_strace(save_syscall, k, save_command(dir, "posix")));
          ASSERT_FALSE(crashed.completed);
          const ProcessRun recovery = run(under_strace(syscall, n, {QUICKSAVE_CRASH_SAVER, "recover", dir.string()}));
          check_after_kill(dir, Mode::in_place, false, tally,
                           "save killed at " + save_syscall + " #" + std::to_string(k) + ", recovery at " + syscall + " #" +
                               std::to_string(n));
          if (recovery.completed || n > 200 || ::testing::Test::HasFailure()) break;
        }
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
  std::printf("%d crashed states\n", crashed_states);
  tally.print("crash points in recovery (in_place, posix, strace)");
  EXPECT_GT(crashed_states, 3);
}

}  // namespace
}  // namespace quicksave
