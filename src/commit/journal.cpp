#include "commit/journal.hpp"

#include <charconv>
#include <unordered_set>

#include "commit/names.hpp"
#include "format/checksum.hpp"
#include "quicksave/error.hpp"

namespace quicksave::commit {
namespace {

constexpr std::string_view kJournalMagic = "quicksave-journal 2";
constexpr std::string_view kMarkMagic = "quicksave-commit 2";

[[noreturn]] void corrupt(std::string_view tag, const std::string& why) {
  throw Error(ErrorCode::corrupt, "journal " + std::string(tag) + " is corrupt: " + why);
}

std::vector<std::string_view> split(std::string_view line, char separator) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  for (std::size_t at; (at = line.find(separator, start)) != std::string_view::npos; start = at + 1) {
    fields.push_back(line.substr(start, at - start));
  }
  fields.push_back(line.substr(start));
  return fields;
}

bool has_control_characters(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

std::string encode_journal(const Journal& j) {
  std::string text(kJournalMagic);
  text += "\ntag\t" + j.tag + "\npattern\t" + j.pattern + "\nwriter\t" + j.writer + "\n";
  for (const auto& e : j.entries) {
    text += "rename\t" + e.final_name + "\t" + (e.had_previous ? "1" : "0") + "\t" + std::to_string(e.inode) + "\n";
  }
  for (const auto& s : j.stale) text += "remove\t" + s.name + "\t" + std::to_string(s.inode) + "\n";
  text += "end\t" + std::to_string(j.entries.size() + j.stale.size()) + "\n";
  return text;
}

Journal decode_journal(std::string_view text, std::string_view expected_tag) {
  if (!text.ends_with("\n")) corrupt(expected_tag, "it does not end with a complete line");
  std::vector<std::string_view> lines = split(text.substr(0, text.size() - 1), '\n');
  if (lines.size() < 5 || lines[0] != kJournalMagic) corrupt(expected_tag, "it does not start with \"quicksave-journal 2\"");
  Journal j;
  const auto header = [&](std::size_t at, std::string_view key) -> std::string {
    const auto fields = split(lines[at], '\t');
    if (fields.size() != 2 || fields[0] != key || has_control_characters(fields[1])) {
      corrupt(expected_tag, "line " + std::to_string(at + 1) + " is not a valid '" + std::string(key) + "' line");
    }
    return std::string(fields[1]);
  };
  j.tag = header(1, "tag");
  if (j.tag != expected_tag) corrupt(expected_tag, "it names the tag '" + j.tag + "'");
  j.pattern = header(2, "pattern");
  j.writer = header(3, "writer");
  const auto checked_name = [&](std::string_view name, std::size_t line) {
    bool ok = is_plain_file_name(name);
    if (ok) {
      try {
        ok = is_checkpoint_file(name, j.pattern);
      } catch (const Error&) {
        corrupt(expected_tag, "its pattern '" + j.pattern + "' is not a valid filename pattern");
      }
    }
    if (!ok) {
      corrupt(expected_tag, "line " + std::to_string(line + 1) + " names '" + std::string(name) +
                                "', which is not a file of the pattern inside the folder");
    }
    return std::string(name);
  };
  const auto checked_inode = [&](std::string_view digits, std::size_t line) {
    std::uint64_t value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    // Only the canonical decimal form encode_journal writes: a journal is never read two ways.
    if (digits.empty() || digits[0] == '0' || error != std::errc() || end != digits.data() + digits.size() || value == 0) {
      corrupt(expected_tag, "line " + std::to_string(line + 1) + " has no valid inode number");
    }
    return value;
  };
  std::unordered_set<std::string> seen;
  std::size_t at = 4;
  for (; at + 1 < lines.size(); ++at) {
    const auto fields = split(lines[at], '\t');
    if (fields.size() == 4 && fields[0] == "rename" && (fields[2] == "0" || fields[2] == "1")) {
      j.entries.push_back(Journal::Entry{checked_name(fields[1], at), fields[2] == "1", checked_inode(fields[3], at)});
    } else if (fields.size() == 3 && fields[0] == "remove") {
      j.stale.push_back(Journal::Stale{checked_name(fields[1], at), checked_inode(fields[2], at)});
    } else {
      corrupt(expected_tag, "line " + std::to_string(at + 1) + " is not a rename or remove line");
    }
    if (!seen.insert(std::string(fields[1])).second) corrupt(expected_tag, "'" + std::string(fields[1]) + "' is named twice");
  }
  const auto end = split(lines[at], '\t');
  if (end.size() != 2 || end[0] != "end" || end[1] != std::to_string(j.entries.size() + j.stale.size())) {
    corrupt(expected_tag, "its last line is not 'end' with the number of entries");
  }
  return j;
}

std::string encode_commit_mark(std::string_view journal_text) {
  return std::string(kMarkMagic) + "\n" + format::hash_to_hex(format::xxh3_64(journal_text)) + "\n";
}

bool commit_mark_matches(std::string_view mark_text, std::string_view journal_text) {
  return mark_text == encode_commit_mark(journal_text);
}

}  // namespace quicksave::commit
