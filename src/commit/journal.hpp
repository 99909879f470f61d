// The in-place switch's journal and commit mark (their role is in commit.cpp's protocol).
//
// Journal text, written once under a draft name and renamed into place (never rewritten):
//   quicksave-journal 2
//   tag\t<tag>                       must equal the tag of the journal's own file name
//   pattern\t<filename pattern>
//   writer\t<host=... boot=... pid=...>   who ran the save (messages only)
//   rename\t<final>\t<0|1>\t<inode>  one per output: switched in from <tag>.<final> (whose inode it
//                                    is); 1 = a previous file was there (kept as <tag>.old.<final>
//                                    until the commit)
//   remove\t<name>\t<inode>          a stale file of the pattern, deleted after the commit point
//   end\t<number of rename and remove lines>
// Commit mark text: "quicksave-commit 2\n<XXH3-64 of the journal text, 16 hex digits>\n".
//
// Decoding is strict: every name must be a plain file name of the folder (names.hpp) and every
// final or stale name a file of the journal's pattern. A journal that breaks any rule is corrupt:
// recovery leaves it (and what it names) alone and says so. The inodes make a planted journal
// harmless even when well formed: recovery deletes a final or stale file only when it is still
// the very file the save recorded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quicksave::commit {

struct Journal {
  struct Entry {
    std::string final_name;
    bool had_previous = false;
    std::uint64_t inode = 0;  // of the new file (its temporary, then its final name)
  };
  struct Stale {
    std::string name;
    std::uint64_t inode = 0;
  };
  std::string tag;
  std::string pattern;
  std::string writer;
  std::vector<Entry> entries;
  std::vector<Stale> stale;
};

// The largest journal or mark recovery reads (a journal names at most ~100k files).
inline constexpr std::size_t kMaxJournalBytes = 64ull << 20;

std::string encode_journal(const Journal& journal);
// Throws Error(corrupt) naming the first broken rule.
Journal decode_journal(std::string_view text, std::string_view expected_tag);

std::string encode_commit_mark(std::string_view journal_text);
// True when `mark_text` is the commit mark of exactly `journal_text`.
bool commit_mark_matches(std::string_view mark_text, std::string_view journal_text);

}  // namespace quicksave::commit
