#include "commit/names.hpp"

#include <random>
#include <regex>

#include "quicksave/index.hpp"

namespace quicksave::commit {
namespace {

constexpr std::string_view kBackupInfix = ".old.";
constexpr std::string_view kJournalSuffix = ".journal";
constexpr std::string_view kJournalDraftSuffix = ".journal.tmp";
constexpr std::string_view kMarkSuffix = ".committed";
constexpr std::string_view kMarkDraftSuffix = ".committed.tmp";

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::string cat(std::string_view a, std::string_view b, std::string_view c = {}) {
  std::string s;
  s.reserve(a.size() + b.size() + c.size());
  s.append(a).append(b).append(c);
  return s;
}

}  // namespace

std::string new_tag() {
  std::random_device random;
  const std::uint64_t value = static_cast<std::uint64_t>(random()) << 32 | random();
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string tag(kTagPrefix);
  for (int shift = 60; shift >= 0; shift -= 4) tag += kDigits[(value >> shift) & 0xf];
  return tag;
}

bool is_tag(std::string_view text) {
  if (text.size() != kTagPrefix.size() + kTagHexDigits || !text.starts_with(kTagPrefix)) return false;
  for (char c : text.substr(kTagPrefix.size())) {
    if (!is_lower_hex(c)) return false;
  }
  return true;
}

std::string temporary_name(std::string_view tag, std::string_view final_name) { return cat(tag, ".", final_name); }
std::string backup_name(std::string_view tag, std::string_view final_name) { return cat(tag, kBackupInfix, final_name); }
std::string journal_name(std::string_view tag) { return cat(tag, kJournalSuffix); }
std::string journal_draft_name(std::string_view tag) { return cat(tag, kJournalDraftSuffix); }
std::string commit_mark_name(std::string_view tag) { return cat(tag, kMarkSuffix); }
std::string commit_mark_draft_name(std::string_view tag) { return cat(tag, kMarkDraftSuffix); }
std::string staging_directory_name(std::string_view target_name, std::string_view tag) {
  return cat(".", target_name, cat(tag, ".tmp"));
}
std::string lock_file_name(std::string_view target_name) { return cat(".", target_name, ".quicksave-lock"); }

std::optional<ProtocolName> parse_protocol_name(std::string_view name) {
  const std::size_t tag_size = kTagPrefix.size() + kTagHexDigits;
  if (name.size() <= tag_size || !is_tag(name.substr(0, tag_size))) return std::nullopt;
  ProtocolName parsed;
  parsed.tag = std::string(name.substr(0, tag_size));
  const std::string_view rest = name.substr(tag_size);
  using Kind = ProtocolName::Kind;
  if (rest == kJournalSuffix) parsed.kind = Kind::journal;
  else if (rest == kJournalDraftSuffix) parsed.kind = Kind::journal_draft;
  else if (rest == kMarkSuffix) parsed.kind = Kind::commit_mark;
  else if (rest == kMarkDraftSuffix) parsed.kind = Kind::commit_mark_draft;
  else if (rest.starts_with(kBackupInfix) && is_plain_file_name(rest.substr(kBackupInfix.size()))) {
    parsed.kind = Kind::backup;
    parsed.final_name = std::string(rest.substr(kBackupInfix.size()));
  } else if (rest.starts_with(".") && is_plain_file_name(rest.substr(1))) {
    parsed.kind = Kind::temporary;
    parsed.final_name = std::string(rest.substr(1));
  } else {
    return std::nullopt;
  }
  return parsed;
}

std::optional<std::string> staging_directory_tag(std::string_view name, std::string_view target_name) {
  const std::string prefix = cat(".", target_name);
  const std::size_t tag_size = kTagPrefix.size() + kTagHexDigits;
  if (name.size() != prefix.size() + tag_size + 4 || !name.starts_with(prefix) || !name.ends_with(".tmp")) return std::nullopt;
  const std::string_view tag = name.substr(prefix.size(), tag_size);
  if (!is_tag(tag)) return std::nullopt;
  return std::string(tag);
}

bool is_plain_file_name(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == ".." || name.starts_with(kTagPrefix)) return false;
  for (unsigned char c : name) {
    if (c == '/' || c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool is_pattern_output(std::string_view name_in, std::string_view pattern) {
  // The reference's clean-up regex, pattern.format(suffix=r"(-\d{5}-of-\d{5})?") + r"(\.index\.json)?",
  // but matched against the whole name with the pattern's text taken literally (the reference
  // matches a prefix and leaves '.' unescaped, so it deletes model.safetensors.old).
  const std::string marker = "\x01";
  const std::string shape = format_filename_pattern(pattern, marker);
  const auto at = shape.find(marker);
  std::string base(name_in);
  if (base.ends_with(".index.json")) base.resize(base.size() - std::string_view(".index.json").size());
  if (at == std::string::npos) return base == shape;
  const std::string before = shape.substr(0, at);
  const std::string after = shape.substr(at + marker.size());
  if (base.size() < before.size() + after.size() || base.compare(0, before.size(), before) != 0 ||
      base.compare(base.size() - after.size(), after.size(), after) != 0) {
    return false;
  }
  static const std::regex shard_suffix("(-\\d{5,}-of-\\d{5,})?");
  return std::regex_match(base.substr(before.size(), base.size() - before.size() - after.size()), shard_suffix);
}

std::string manifest_name(std::string_view pattern) { return format_filename_pattern(pattern, "") + ".quicksave-manifest.json"; }

bool is_checkpoint_file(std::string_view name, std::string_view pattern) {
  return is_pattern_output(name, pattern) || name == manifest_name(pattern);
}

}  // namespace quicksave::commit
