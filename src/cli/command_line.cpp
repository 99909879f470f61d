// The option parser shared by the commands and the size/count parsers of their options.
#include <algorithm>
#include <cstdio>
#include <charconv>

#include "cli/cli.hpp"
#include "cli/text_format.hpp"
#include "quicksave/split.hpp"

namespace quicksave::cli {

Args::Args(std::span<const std::string> argv, std::vector<std::string_view> flags, std::vector<std::string_view> valued) {
  const auto declared = [](const std::vector<std::string_view>& names, std::string_view name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  bool only_positional = false;  // after "--" every word is positional
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& word = argv[i];
    if (only_positional || word.size() < 3 || word.rfind("--", 0) != 0) {
      if (word == "--") {
        only_positional = true;
        continue;
      }
      if (!only_positional && word.size() > 1 && word[0] == '-') throw UsageError("unknown option " + word);
      positional_.push_back(word);
      continue;
    }
    std::string name = word.substr(2);
    std::optional<std::string> inline_value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (declared(flags, name)) {
      if (inline_value) throw UsageError("option --" + name + " takes no value");
      flags_set_.push_back(name);
    } else if (declared(valued, name)) {
      if (!inline_value) {
        if (i + 1 >= argv.size()) throw UsageError("option --" + name + " needs a value");
        inline_value = argv[++i];
      }
      const auto previous = std::find_if(values_.begin(), values_.end(), [&](const auto& kv) { return kv.first == name; });
      if (previous != values_.end()) throw UsageError("option --" + name + " given twice");
      values_.emplace_back(name, *inline_value);
    } else {
      throw UsageError("unknown option --" + name);
    }
  }
}

bool Args::flag(std::string_view name) const {
  return std::find(flags_set_.begin(), flags_set_.end(), name) != flags_set_.end();
}

std::optional<std::string> Args::value(std::string_view name) const {
  for (const auto& [key, value] : values_) {
    if (key == name) return value;
  }
  return std::nullopt;
}

const std::string& Args::one_positional(std::string_view what) const {
  if (positional_.empty()) throw UsageError("missing " + std::string(what));
  if (positional_.size() > 1) throw UsageError("unexpected argument " + positional_[1]);
  return positional_.front();
}

std::uint64_t parse_count(std::string_view text, std::string_view option) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    throw UsageError("--" + std::string(option) + " expects a non-negative integer, got '" + std::string(text) + "'");
  }
  return value;
}

std::uint64_t parse_byte_size(std::string_view text, std::string_view option) {
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    const std::uint64_t bytes = parse_count(text, option);
    if (bytes == 0) throw UsageError("--" + std::string(option) + " must be positive");
    return bytes;
  }
  std::int64_t bytes = 0;
  try {
    bytes = parse_size_to_int(text);
  } catch (const Error& e) {
    throw UsageError("--" + std::string(option) + ": " + e.what() + " (sizes look like 4GB, 512MB or 8388608)");
  }
  if (bytes <= 0) throw UsageError("--" + std::string(option) + " must be positive, got '" + std::string(text) + "'");
  return static_cast<std::uint64_t>(bytes);
}

int run_guarded(const std::string& program, int (*run)(std::span<const std::string>), std::span<const std::string> args) {
  try {
    return run(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", program.c_str(), e.what(), program.c_str());
    return kExitUsage;
  } catch (const Error& e) {
    // Messages quote names from the files: escaped.
    std::fprintf(stderr, "%s: error (%s): %s\n", program.c_str(), to_string(e.code()), printable(e.what()).c_str());
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), printable(e.what()).c_str());
    return kExitFailure;
  }
}

}  // namespace quicksave::cli
