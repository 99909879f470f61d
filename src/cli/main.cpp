// The `quicksave` command: dispatches to one command per file, maps errors to exit codes.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/cli.hpp"
#include "cli/text_format.hpp"

namespace {

using quicksave::cli::kExitFailure;
using quicksave::cli::kExitOk;
using quicksave::cli::kExitUsage;

struct Command {
  const char* name;
  int (*run)(std::span<const std::string>);
  const char* summary;
};

const Command kCommands[] = {
    {"inspect", quicksave::cli::run_inspect, "list a checkpoint's tensors, shards, totals and metadata"},
    {"verify", quicksave::cli::run_verify, "validate headers, index and every byte; detect an interrupted save"},
    {"save-random", quicksave::cli::run_save_random, "write a synthetic checkpoint through the asynchronous engine"},
    {"recover", quicksave::cli::run_recover, "complete or roll back a save interrupted by a crash"},
    {"bench", quicksave::cli::run_bench, "time quicksave against torch::save, plain writers and the hardware limits"},
    {"demo", quicksave::cli::run_demo, "an asynchronous save during a simulated training loop, verified and reloaded"},
};

void print_usage(std::FILE* out) {
  std::fputs("Usage: quicksave COMMAND [ARGS] [--help]\n\nCommands:\n", out);
  for (const auto& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fputs(
      "\n`quicksave COMMAND --help` describes a command.\n\n"
      "Exit status (every command):\n"
      "  0  success (verify: the checkpoint is valid)\n"
      "  1  the checkpoint is invalid or the operation failed (the reason is printed)\n"
      "  2  usage error (unknown command or option, missing or malformed argument)\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty()) {
    print_usage(stderr);
    return kExitUsage;
  }
  if (words[0] == "--help" || words[0] == "-h" || words[0] == "help") {
    print_usage(stdout);
    return kExitOk;
  }
  if (words[0] == "--version") {
    std::printf("quicksave %s\n", QUICKSAVE_VERSION);
    return kExitOk;
  }
  for (const auto& command : kCommands) {
    if (words[0] != command.name) continue;
    const std::span<const std::string> args(words.data() + 1, words.size() - 1);
    return quicksave::cli::run_guarded(std::string("quicksave ") + command.name, command.run, args);
  }
  std::fprintf(stderr, "quicksave: unknown command '%s'\n\n", words[0].c_str());
  print_usage(stderr);
  return kExitUsage;
}
