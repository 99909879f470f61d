// `quicksave recover DIR`: completes or rolls back a save that a crash interrupted (the recovery
// that loading and saving also run), and says what it did.
#include <algorithm>
#include <cstdio>

#include "cli/checkpoint_files.hpp"
#include "cli/cli.hpp"
#include "quicksave/save.hpp"

namespace quicksave::cli {
namespace {

constexpr const char* kHelp = R"(Usage: quicksave recover DIR

Repairs what an interrupted save left in (or beside) the checkpoint folder DIR: a switch-over
that reached its commit point is rolled forward, one that did not is rolled back (the previous
files are restored), and temporaries and staging directories of dead processes are removed.
Leftovers of a save that is still running are left alone. Afterwards DIR holds either the
previous complete checkpoint or the new complete one.

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
  const std::vector<std::string> actions = recover_checkpoint(dir);
  if (actions.empty()) {
    std::printf("%s: nothing to recover\n", dir.string().c_str());
  } else {
    std::printf("%s: recovered an interrupted save\n", dir.string().c_str());
    for (const auto& a : actions) std::printf("  %s\n", a.c_str());
  }
  // What recovery must leave alone: leftovers of saves that are still running.
  for (const auto& save : describe_leftovers(find_leftovers(dir))) std::printf("left alone: %s\n", save.description.c_str());
  return kExitOk;
}

}  // namespace quicksave::cli
