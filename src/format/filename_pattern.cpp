// Shard file names: Python str.format semantics for `{suffix}`, and the loader's checks of the
// names an index points at.
#include <cstdio>

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave {
namespace {

Error bad_pattern(std::string_view pattern, const std::string& why) {
  return Error(ErrorCode::invalid_argument, "invalid filename pattern " + format::python_repr(pattern) + ": " + why);
}

// Walks the pattern, calling on_text for literal text and on_field for each `{suffix}`.
template <class OnText, class OnField>
void walk_pattern(std::string_view pattern, OnText on_text, OnField on_field) {
  std::size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '}') {
      if (i + 1 < pattern.size() && pattern[i + 1] == '}') {
        on_text("}");
        i += 2;
        continue;
      }
      throw bad_pattern(pattern, "Single '}' encountered in format string (write '}}' for a literal brace)");
    }
    if (c != '{') {
      on_text(std::string_view(&pattern[i], 1));
      ++i;
      continue;
    }
    if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
      on_text("{");
      i += 2;
      continue;
    }
    const auto close = pattern.find('}', i + 1);
    if (close == std::string_view::npos) {
      throw bad_pattern(pattern, "Single '{' encountered in format string (write '{{' for a literal brace)");
    }
    const std::string_view field = pattern.substr(i + 1, close - i - 1);
    if (field.empty()) throw bad_pattern(pattern, "positional field '{}' (only {suffix} is allowed)");
    if (field != "suffix") {
      if (field.starts_with("suffix")) {
        throw bad_pattern(pattern, "conversions and format specs are not supported in {" + std::string(field) + "}");
      }
      // Python raises KeyError('<field>') here.
      throw bad_pattern(pattern, "unknown field " + format::python_repr(field) + " (only {suffix} is allowed)");
    }
    on_field();
    i = close + 1;
  }
}

}  // namespace

std::string format_filename_pattern(std::string_view pattern, std::string_view suffix) {
  std::string out;
  walk_pattern(pattern, [&](std::string_view text) { out += text; }, [&] { out += suffix; });
  return out;
}

bool pattern_has_suffix(std::string_view pattern) {
  bool found = false;
  walk_pattern(pattern, [](std::string_view) {}, [&] { found = true; });
  return found;
}

std::string shard_suffix(std::size_t one_based_index, std::size_t shard_count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu", one_based_index, shard_count);
  return buf;
}

std::string index_filename(std::string_view pattern) { return format_filename_pattern(pattern, "") + ".index.json"; }

namespace {

// PurePath(name).suffix on POSIX: the final component's last ".ext", if any.
std::string_view path_suffix(std::string_view path) {
  const auto slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return {};
  return name.substr(dot);
}

bool has_drive_root_or_parent(std::string_view v) {
  if (v.size() >= 2 && v[1] == ':') return true;          // a Windows drive, "C:x" or even "a:b"
  if (!v.empty() && (v[0] == '/' || v[0] == '\\')) return true;  // a root, or a UNC "\\server\share"
  std::size_t start = 0;
  while (start <= v.size()) {
    auto end = v.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = v.size();
    if (v.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

void validate_shard_filename(std::string_view shard, std::string_view pattern, std::string_view index_file) {
  const std::string prefix = "Invalid shard filename '" + std::string(shard) + "' in index file '" + std::string(index_file) + "'. ";
  if (has_drive_root_or_parent(shard) || shard.find('\0') != std::string_view::npos) {
    throw Error(ErrorCode::invalid_argument, prefix + "Shard filenames must be relative paths without '..' components.");
  }
  const std::string expected = std::string(path_suffix(format_filename_pattern(pattern, "")));
  if (!shard.ends_with(expected)) {
    throw Error(ErrorCode::invalid_argument, prefix + "Expected '" + expected + "' extension to match the index format.");
  }
}

}  // namespace quicksave
