// Shared pieces of the `quicksave` command-line tool: exit codes, the usage error, a small
// option parser, and the entry point of every command.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "quicksave/error.hpp"

namespace quicksave::cli {

// Exit codes, the same for every command (documented in `quicksave --help`).
inline constexpr int kExitOk = 0;       // success; for verify: the checkpoint is valid
inline constexpr int kExitFailure = 1;  // the checkpoint is invalid, or the operation failed
inline constexpr int kExitUsage = 2;    // the command line is wrong

// A wrong command line: main() prints it with a hint to --help and exits with kExitUsage.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(ErrorCode::invalid_argument, message) {}
};

// Options of one command: `--name value`, `--name=value` or a bare `--flag`; everything else is
// positional. An option not declared by the command is a UsageError, so typos never pass silently.
class Args {
 public:
  Args(std::span<const std::string> argv, std::vector<std::string_view> flags, std::vector<std::string_view> valued);

  bool flag(std::string_view name) const;
  std::optional<std::string> value(std::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // The single positional argument `what` (e.g. "PATH"); UsageError when missing or extra.
  const std::string& one_positional(std::string_view what) const;

 private:
  std::vector<std::string> flags_set_;
  std::vector<std::pair<std::string, std::string>> values_;
  std::vector<std::string> positional_;
};

// "4GB", "512MB", "1.5GB" (parse_size_to_int: decimal units) or plain bytes ("8388608").
// UsageError naming `option` when it is not a positive size.
std::uint64_t parse_byte_size(std::string_view text, std::string_view option);
// A non-negative integer; UsageError naming `option` otherwise.
std::uint64_t parse_count(std::string_view text, std::string_view option);

// True when the words ask for the command's help (--help or -h anywhere).
inline bool wants_help(std::span<const std::string> args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

// The commands. `args` are the words after the command's name; each returns an exit code.
int run_inspect(std::span<const std::string> args);
int run_verify(std::span<const std::string> args);
int run_save_random(std::span<const std::string> args);
int run_recover(std::span<const std::string> args);
int run_demo(std::span<const std::string> args);
// `quicksave bench`: runs quicksave-bench (benchmarks/), installed beside this program, with `args`.
int run_bench(std::span<const std::string> args);

// Runs one command and turns what it throws into the exit status, with the message on stderr:
// UsageError → kExitUsage (with a hint to `PROGRAM --help`), any other error → kExitFailure.
// `program` names it in messages ("quicksave verify", "quicksave-bench").
int run_guarded(const std::string& program, int (*run)(std::span<const std::string>), std::span<const std::string> args);

}  // namespace quicksave::cli
