// Crash consistency: a child process saves checkpoints in a loop and is killed with SIGKILL at
// random moments. After each kill, recovery runs and the directory must hold exactly the last
// completed save or the one in progress, complete, with no temporaries left.
//
// QUICKSAVE_CRASH_ITERATIONS overrides the number of kills (the `stress` ctest runs 1000).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "commit/checkpoint_fixture.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr int kTensors = 6;

SaveOptions layout_for(int generation) {
  SaveOptions options;
  if (generation % 2 == 0) options.max_shard_size = 2 * 256 * 1024;  // 3 shards; odd generations: one file
  return options;
}

enum class Writer { sync, async };

[[noreturn]] void child_loop(const fs::path& dir, int first_generation, int done_fd, Writer writer) {
  std::unique_ptr<Checkpointer> ckpt;
  if (writer == Writer::async) {
    CheckpointerOptions options;
    options.chunk_bytes = 64 * 1024;
    options.pinned_budget_bytes = 8 * 64 * 1024;
    ckpt = std::make_unique<Checkpointer>(options);  // threads are made after fork, in the child
  }
  for (int g = first_generation;; ++g) {
    testing::SyntheticStateDict sd(g, kTensors, 64 * 1024);
    if (ckpt) ckpt->save(sd.tensors, dir, layout_for(g));
    else save_state_dict(sd.tensors, dir, layout_for(g));
    const int done = g;
    if (::write(done_fd, &done, sizeof done) != sizeof done) ::_exit(3);
  }
}

int iterations() {
  const char* env = std::getenv("QUICKSAVE_CRASH_ITERATIONS");
  return env ? std::atoi(env) : 60;
}

void run_crash_loop(bool model_folder, Writer writer) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  save_state_dict(testing::SyntheticStateDict(0, kTensors, 64 * 1024).tensors, dir, layout_for(0));
  if (model_folder) std::ofstream(dir / "config.json") << "{}";
  std::mt19937 rng(model_folder ? 11 : 12);
  int last_done = 0;
  int next_generation = 1;
  int recoveries = 0;  // kills that left something to repair: evidence that kills land mid-save
  for (int i = 0; i < iterations(); ++i) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_loop(dir, next_generation, fds[1], writer);
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 40000)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    int done;
    while (::read(fds[0], &done, sizeof done) == sizeof done) last_done = done;
    ::close(fds[0]);

    const auto actions = recover_checkpoint(dir);
    recoveries += actions.empty() ? 0 : 1;
    const auto generation = testing::checkpoint_generation(dir, kTensors);
    ASSERT_TRUE(generation.has_value()) << "kill " << i;
    // The last save that reported completion, or the one that was in flight when killed.
    EXPECT_TRUE(*generation == last_done || *generation == last_done + 1)
        << "kill " << i << ": found generation " << *generation << ", last completed " << last_done;
    EXPECT_FALSE(testing::has_leftovers(dir)) << "kill " << i;
    if (model_folder) {
      EXPECT_TRUE(fs::exists(dir / "config.json"));
    }
    next_generation = std::max(last_done, *generation) + 1;
    last_done = *generation;
  }
  std::printf("%d kills, %d left work for recovery\n", iterations(), recoveries);
  EXPECT_GT(recoveries, 0) << "no kill landed inside a save: the test is not testing anything";
}

TEST(Crash, KilledSavesIntoACheckpointDirectory) { run_crash_loop(false, Writer::sync); }
TEST(Crash, KilledSavesIntoAModelFolder) { run_crash_loop(true, Writer::sync); }
TEST(Crash, KilledAsyncSavesIntoACheckpointDirectory) { run_crash_loop(false, Writer::async); }
TEST(Crash, KilledAsyncSavesIntoAModelFolder) { run_crash_loop(true, Writer::async); }

}  // namespace
}  // namespace quicksave
