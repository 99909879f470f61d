// Multi-process distributed saves over real c10d on 127.0.0.1: 1, 2 and 4 processes, both
// layouts, files identical to a single-process save of the union; one rank's write failing;
// one rank killed mid-save. Each rank is a dist_worker process.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "commit/checkpoint_fixture.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

pid_t spawn(std::vector<std::string> args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

using testing::read_file;

// Runs `world` ranks; returns their exit codes.
std::vector<int> run_world(int world, const std::string& layout, const fs::path& dir, std::vector<std::string> extra = {}) {
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> args{QUICKSAVE_DIST_WORKER, "--rank", std::to_string(r), "--world", std::to_string(world), "--port", port,
                                  "--layout", layout, "--dir", dir.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pids.push_back(spawn(args));
  }
  std::vector<int> codes;
  for (const pid_t pid : pids) codes.push_back(wait_exit(pid));
  return codes;
}

class DistProcesses : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(DistProcesses, FilesEqualASingleProcessSaveOfTheUnion) {
  const auto [world, layout] = GetParam();
  TempDir tmp;
  const auto codes = run_world(world, layout, tmp.path() / "dist");
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << read_file(tmp.path() / ("rank" + std::to_string(r) + ".err"));
  ASSERT_EQ(wait_exit(spawn({QUICKSAVE_DIST_WORKER, "--single", "--world", std::to_string(world), "--layout", layout, "--dir",
                             (tmp.path() / "single").string()})),
            0);
  EXPECT_GT(testing::expect_same_files(tmp.path() / "single", tmp.path() / "dist"), 2);
}

INSTANTIATE_TEST_SUITE_P(Worlds, DistProcesses,
                         ::testing::Combine(::testing::Values(1, 2, 4), ::testing::Values("replicated", "partitioned")),
                         [](const auto& info) { return std::to_string(std::get<0>(info.param)) + "_" + std::get<1>(info.param); });

TEST(DistProcessFailure, AFailingWriteOnOneRankFailsEveryRankAndPublishesNothing) {
  TempDir tmp;
  const auto codes = run_world(3, "partitioned", tmp.path() / "dist", {"--fault-rank", "1"});
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(codes[r], 1) << "rank " << r;
    const std::string error = read_file(tmp.path() / ("rank" + std::to_string(r) + ".err"));
    EXPECT_NE(error.find(r == 1 ? "Input/output error" : "rank 1:"), std::string::npos) << "rank " << r << ": " << error;
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "dist"));
}

TEST(DistProcessFailure, AKilledRankMakesTheOthersFailWithinTheTimeout) {
  TempDir tmp;
  const auto codes = run_world(3, "replicated", tmp.path() / "dist", {"--kill-rank", "2", "--timeout-ms", "3000"});
  EXPECT_EQ(codes[2], 128 + SIGKILL);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(codes[r], 1) << "rank " << r;
    const std::string error = read_file(tmp.path() / ("rank" + std::to_string(r) + ".err"));
    EXPECT_NE(error.find("rank 2 stopped responding"), std::string::npos) << "rank " << r << ": " << error;
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "dist" / "model.safetensors.index.json"));
}

}  // namespace
}  // namespace quicksave
