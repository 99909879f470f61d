// The names the commit protocol gives its files, and the one rule for names it will act on.
//
// Every save has a tag ".qs-<16 hex digits>" (random; who made it is recorded in the lock file
// and the journal, never in a name: a pid means nothing across pid namespaces and hosts).
//   beside the target <parent>/<name>:
//     .<name>.quicksave-lock        the writers' lock (never removed)
//     .<name><tag>.tmp/             directory modes: the new checkpoint is staged here
//   inside the target (in-place mode):
//     <tag>.<final>                 a new file before its switch
//     <tag>.old.<final>             the previous <final>, kept until the commit point
//     <tag>.journal(.tmp)           what the switch does (written once, renamed into place)
//     <tag>.committed(.tmp)         the commit point (written once, renamed into place)
//
// A protocol file names only plain file names of this folder, of forms the protocol itself
// creates; anything else is refused as corrupt and never acted on (a planted journal must not
// delete or overwrite anything, in the folder or outside it).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace quicksave::commit {

inline constexpr std::string_view kTagPrefix = ".qs-";
inline constexpr std::size_t kTagHexDigits = 16;

std::string new_tag();
bool is_tag(std::string_view text);

std::string temporary_name(std::string_view tag, std::string_view final_name);
std::string backup_name(std::string_view tag, std::string_view final_name);
std::string journal_name(std::string_view tag);
std::string journal_draft_name(std::string_view tag);
std::string commit_mark_name(std::string_view tag);
std::string commit_mark_draft_name(std::string_view tag);
std::string staging_directory_name(std::string_view target_name, std::string_view tag);
std::string lock_file_name(std::string_view target_name);

// A file of the in-place protocol, taken apart.
struct ProtocolName {
  enum class Kind { temporary, backup, journal, journal_draft, commit_mark, commit_mark_draft };
  Kind kind = Kind::temporary;
  std::string tag;
  std::string final_name;  // temporary and backup only
};
std::optional<ProtocolName> parse_protocol_name(std::string_view name);
// The tag of a staging directory of `target_name` (".<target_name><tag>.tmp"), if `name` is one.
std::optional<std::string> staging_directory_tag(std::string_view name, std::string_view target_name);

// A plain name of a file directly inside the folder: not empty, not "." or "..", no '/', no
// control characters, at most 255 bytes, and not a protocol name itself.
bool is_plain_file_name(std::string_view name);

// True when `name` is a file name this pattern produces: the single file, a shard
// (-NNNNN-of-NNNNN) or the index. Exact matches only (unlike the reference's prefix regex).
bool is_pattern_output(std::string_view name, std::string_view pattern);
// The checksum manifest published with a checkpoint of `pattern`:
// pattern.format(suffix="") + ".quicksave-manifest.json", e.g. "model.safetensors.quicksave-manifest.json".
std::string manifest_name(std::string_view pattern);
// A pattern output or the pattern's manifest: the files a save of `pattern` owns.
bool is_checkpoint_file(std::string_view name, std::string_view pattern);

}  // namespace quicksave::commit
