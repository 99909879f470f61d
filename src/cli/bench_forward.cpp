// `quicksave bench`: the benchmark harness is its own program (benchmarks/, quicksave-bench, which
// links LibTorch); this command runs it from beside the quicksave executable.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli.hpp"

namespace quicksave::cli {

int run_bench(std::span<const std::string> args) {
  std::error_code ec;
  const std::filesystem::path exe_dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  // The build tree keeps it in its benchmarks folder; an installation beside this program.
  const std::filesystem::path candidates[] = {exe_dir / "quicksave-bench", exe_dir / ".." / "benchmarks" / "quicksave-bench"};
  for (const auto& tool : candidates) {
    if (::access(tool.c_str(), X_OK) != 0) continue;
    std::vector<std::string> words{tool.string()};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    throw Error(ErrorCode::unavailable, "cannot run " + tool.string() + ": " + std::strerror(errno), errno);
  }
  throw Error(ErrorCode::unavailable, "quicksave bench runs quicksave-bench, which is not installed beside " + exe_dir.string() +
                                          " (it is built with the benchmarks: QUICKSAVE_BUILD_BENCHMARKS, and LibTorch)");
}

}  // namespace quicksave::cli
