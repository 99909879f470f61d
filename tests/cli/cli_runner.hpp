// Test helpers for the `quicksave` executable: run it with arguments and capture its exit status,
// stdout and stderr; a temporary folder; file helpers for breaking checkpoints on purpose.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace quicksave::cli_test {

namespace fs = std::filesystem;

struct Result {
  int status = -1;  // exit status; 128 + signal when killed
  std::string out;
  std::string err;
};

using testing::read_file;
using testing::write_file;
using TempDir = testing::TempDir;

// Starts the CLI with `args`, its stdout and stderr going to files in `capture_dir`; returns the pid.
inline pid_t spawn(const std::vector<std::string>& args, const fs::path& capture_dir) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open((capture_dir / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open((capture_dir / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    std::vector<char*> argv;
    std::string exe = QUICKSAVE_CLI;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

inline Result wait_for(pid_t pid, const fs::path& capture_dir) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Result r;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(capture_dir / "stdout");
  r.err = read_file(capture_dir / "stderr");
  return r;
}

// Runs the CLI to completion.
inline Result run(const std::vector<std::string>& args) {
  TempDir capture;
  return wait_for(spawn(args, capture.path()), capture.path());
}

// Every name in `dir` with its size and modification time: to check that a command changed nothing.
inline std::string listing(const fs::path& dir) {
  std::vector<std::string> lines;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::ostringstream line;
    line << e.path().string() << ' ' << (e.is_regular_file() ? e.file_size() : 0) << ' '
         << fs::last_write_time(e.path()).time_since_epoch().count();
    lines.push_back(line.str());
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace quicksave::cli_test
