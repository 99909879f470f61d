// `quicksave recover DIR`: completes or rolls back a save that a crash interrupted (the recovery
// that loading and saving also run), and says what it did.
#include <algorithm>
#include <cstdio>

#include "cli/cli.hpp"
#include "commit/recovery.hpp"

namespace quicksave::cli {

namespace fs = std::filesystem;
namespace {

constexpr const char* kHelp = R"(Usage: quicksave recover DIR

Repairs what an interrupted save left in (or beside) the checkpoint folder DIR: a switch-over
that reached its commit point is rolled forward, one that did not is rolled back (the previous
files are restored), and temporaries and staging directories are removed. It takes the folder's
writer lock first: while a save holds it, nothing is touched. A journal that breaks the
protocol's rules (names outside the folder, files it did not create) is left alone and reported.
Afterwards DIR holds either the previous complete checkpoint or the new complete one; running it
again (even after it was killed) is always safe.

Options:
  --help   this text

Exit status: 0 done (including "nothing to do"); 1 recovery failed; 2 usage error.
)";

}  // namespace

int run_recover(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {}, {});
  const fs::path dir = args.one_positional("DIR");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw UsageError(dir.string() + " is not a directory");
  auto file_system = commit::make_posix_file_system();
  const commit::RecoveryReport report = commit::recover(*file_system, dir);
  if (report.actions.empty()) {
    std::printf("%s: nothing to recover\n", dir.string().c_str());
  } else {
    std::printf("%s: recovered an interrupted save\n", dir.string().c_str());
    for (const auto& a : report.actions) std::printf("  %s\n", a.c_str());
  }
  // What recovery must leave alone: a save that holds the folder now, or files it cannot vouch for.
  for (const auto& line : report.left_alone) std::printf("left alone: %s\n", line.c_str());
  return kExitOk;
}

}  // namespace quicksave::cli
