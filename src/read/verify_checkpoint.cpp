// verify_checkpoint (quicksave/verify.hpp): validates a checkpoint completely and reports one
// precise line per problem. Reads only.
//
// Checks, in order:
//   1. leftovers of an interrupted save (temporaries, journals, staging directories);
//   2. finding the checkpoint (file, index or folder: read::find_checkpoint);
//   3. the index: JSON schema, shard file names (no absolute path or `..`, the pattern's
//      extension), metadata.total_size;
//   4. every shard: header rules (SafetensorsFile::open), then every byte read and checksummed;
//   5. index <-> shards: every weight_map entry exists in its shard, every shard tensor is in the
//      index under that shard, no tensor in two shards, no stray shard of the pattern;
//   6. content: every tensor's bytes against quicksave's checksum manifest (as loads read the folder).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <variant>

#include "commit/names.hpp"
#include "format/checksum.hpp"
#include "io/regular_file.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/verify.hpp"
#include "read/checkpoint_files.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using read::CheckpointLocation;

constexpr std::size_t kReadBlock = 8u << 20;

// Reads `path` completely (`expected` bytes), feeding the checksum and the progress bar.
// Returns the digest, or the problem.
// Reports progress through `progress` (may be empty) against `total` bytes.
std::variant<std::uint64_t, std::string> checksum_file(const fs::path& path, std::uint64_t expected, const VerifyOptions& options,
                                                       std::uint64_t total, std::uint64_t& read_so_far) {
  std::optional<io::RegularFile> file;  // a regular file still (it may have been replaced since it was opened)
  try {
    file.emplace(io::RegularFile::open(path));
  } catch (const Error& e) {
    return std::string("cannot open ") + path.filename().string() + ": " + e.what();
  }
  const int fd = file->fd();
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<std::byte[]> buffer(new std::byte[kReadBlock]);
  format::Xxh64 hash;
  std::uint64_t offset = 0;
  std::string problem;
  for (;;) {
    const ssize_t n = ::pread(fd, buffer.get(), kReadBlock, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      problem = "reading " + path.filename().string() + " failed at offset " + std::to_string(offset) + ": " + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    hash.update(buffer.get(), static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
    read_so_far += static_cast<std::uint64_t>(n);
    if (options.progress) options.progress(read_so_far, total, path.filename().string());
  }
  if (problem.empty() && offset != expected) {
    problem = path.filename().string() + " changed size while being read (" + std::to_string(expected) + " bytes expected, " +
              std::to_string(offset) + " read)";
  }
  if (!problem.empty()) return problem;
  return hash.digest();
}

// The folder an interrupted save of `path` would have left leftovers in (or beside).
fs::path checkpoint_folder(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return path.parent_path().empty() ? fs::path(".") : path.parent_path();
  return path;
}

void check_total_size(const ShardIndex& index, std::uint64_t data_bytes, bool all_read, VerifyReport& report) {
  const MetaValue* total = index.metadata.find("total_size");
  if (total == nullptr) {
    report.warnings.push_back("index " + *report.index + " has no metadata.total_size");
    return;
  }
  std::int64_t value = 0;
  if (const auto* i = std::get_if<std::int64_t>(total)) {
    value = *i;
  } else if (const auto* d = std::get_if<double>(total); d != nullptr && *d == std::floor(*d)) {
    value = static_cast<std::int64_t>(*d);
  } else {
    report.problems.push_back("index " + *report.index + ": metadata.total_size is not an integer");
    return;
  }
  if (value < 0) {
    report.problems.push_back("index " + *report.index + ": metadata.total_size is negative (" + std::to_string(value) + ")");
  } else if (all_read && static_cast<std::uint64_t>(value) != data_bytes) {
    // The reference counts whole storages (a saved slice counts its full storage), so a
    // difference is possible in a loadable checkpoint: worth a warning, not a failure.
    report.warnings.push_back("index " + *report.index + ": metadata.total_size is " + std::to_string(value) +
                              " but the shards hold " + std::to_string(data_bytes) + " bytes of tensor data");
  }
}

// What the steps share: where the checkpoint's files are and what was opened of them.
struct Checkpoint {
  CheckpointLocation location;
  std::optional<ShardIndex> index;
  std::vector<std::string> shard_names;  // in the order the index first mentions them
  std::vector<std::optional<SafetensorsFile>> opened;  // like shard_names; empty when it could not be opened
};

// 1. Interrupted saves: leftovers of a crash are problems, those of a save in progress warnings.
void report_interrupted_saves(const fs::path& path, VerifyReport& report) {
  const std::vector<read::Leftover> leftovers = read::find_leftovers(checkpoint_folder(path));
  for (const auto& l : leftovers) report.leftovers.push_back({l.path, commit::to_string(l.kind), l.tag, l.save_in_progress});
  for (const auto& save : read::describe_leftovers(leftovers)) {
    (save.save_in_progress ? report.warnings : report.problems).push_back("interrupted " + save.description);
  }
}

// 2-3. The checkpoint's files and its index (schema, shard list); nullopt when there is nothing to
// check further.
std::optional<Checkpoint> find_files(const fs::path& path, VerifyReport& report) {
  Checkpoint c;
  try {
    c.location = read::find_checkpoint(path);
  } catch (const Error& e) {
    report.problems.push_back(e.what());
    return std::nullopt;
  }
  if (c.location.index_file) {
    report.kind = "sharded";
    report.index = c.location.index_file->filename().string();
    try {
      c.index = read_index_file(*c.location.index_file);
    } catch (const Error& e) {
      report.problems.push_back(std::string("index ") + *report.index + ": " + e.what());
      return std::nullopt;
    }
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : c.index->weight_map) {
      if (seen.insert(shard).second) c.shard_names.push_back(shard);
    }
    if (c.index->weight_map.empty()) report.problems.push_back("index " + *report.index + ": weight_map is empty");
  } else {
    report.kind = "single";
    c.shard_names.push_back(c.location.single_file->filename().string());
  }
  return c;
}

// 4a. Every file's name and header (SafetensorsFile::open's rules); returns the bytes to read.
std::uint64_t open_files(Checkpoint& c, VerifyReport& report) {
  c.opened.assign(c.shard_names.size(), std::nullopt);
  std::uint64_t total_file_bytes = 0;
  for (std::size_t i = 0; i < c.shard_names.size(); ++i) {
    const std::string& name = c.shard_names[i];
    VerifiedFile file{.name = name};
    if (c.index) {
      try {
        validate_shard_filename(name, c.location.pattern, *report.index);
      } catch (const Error& e) {
        report.problems.push_back(e.what());
        file.status = "not checked";
        report.files.push_back(std::move(file));
        continue;
      }
    }
    try {
      c.opened[i] = SafetensorsFile::open(c.location.directory / name);
      file.bytes = c.opened[i]->file_size();
      file.tensors = c.opened[i]->header().tensors.size();
      total_file_bytes += file.bytes;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        file.status = "missing";
        std::size_t mentions = 0;
        if (c.index) {
          for (const auto& [tensor, shard] : c.index->weight_map) mentions += shard == name;
        }
        report.problems.push_back("missing shard " + name + (c.index ? " (the index maps " + std::to_string(mentions) + " tensors to it)" : ""));
      } else {
        file.status = e.code() == ErrorCode::io ? "unreadable" : "invalid";
        std::error_code ec;
        file.bytes = fs::file_size(c.location.directory / name, ec);
        report.problems.push_back(e.what());
      }
    }
    report.files.push_back(std::move(file));
  }
  return total_file_bytes;
}

// 4b. Every byte of every opened file, with its XXH64.
void read_files(const Checkpoint& c, const VerifyOptions& options, std::uint64_t total_file_bytes, VerifyReport& report) {
  for (std::size_t i = 0; i < c.shard_names.size(); ++i) {
    if (!c.opened[i]) continue;
    auto digest = checksum_file(c.opened[i]->path(), c.opened[i]->file_size(), options, total_file_bytes, report.bytes_read);
    if (auto* problem = std::get_if<std::string>(&digest)) {
      report.files[i].status = "unreadable";
      report.problems.push_back(*problem);
    } else {
      report.files[i].xxh64 = std::get<std::uint64_t>(digest);
    }
  }
  for (std::size_t i = 0; i < c.shard_names.size(); ++i) {
    if (!c.opened[i]) continue;
    report.tensors += c.opened[i]->header().tensors.size();
    report.data_bytes += c.opened[i]->header().data_bytes();
  }
}

// 5. Index <-> shards: every entry in its shard, every shard tensor in the index under that
// shard, no tensor twice, total_size, no stray shard of the pattern.
void check_index_against_shards(const Checkpoint& c, VerifyReport& report) {
  if (!c.index) return;
  std::map<std::string, std::size_t> shard_position;
  for (std::size_t i = 0; i < c.shard_names.size(); ++i) shard_position[c.shard_names[i]] = i;
  std::map<std::string, std::string> mapped(c.index->weight_map.begin(), c.index->weight_map.end());
  for (const auto& [tensor, shard] : c.index->weight_map) {
    const auto& file = c.opened[shard_position[shard]];
    if (file && file->find(tensor) == nullptr) {
      report.problems.push_back("tensor `" + tensor + "`: the index maps it to " + shard + ", which has no tensor of that name");
    }
  }
  std::map<std::string, std::string> found_in;  // tensor → first shard holding it
  for (std::size_t i = 0; i < c.shard_names.size(); ++i) {
    if (!c.opened[i]) continue;
    for (const auto& t : c.opened[i]->header().tensors) {
      const auto [it, first] = found_in.emplace(t.name, c.shard_names[i]);
      if (!first) {
        report.problems.push_back("tensor `" + t.name + "` appears in both " + it->second + " and " + c.shard_names[i]);
        continue;
      }
      const auto m = mapped.find(t.name);
      if (m == mapped.end()) {
        report.problems.push_back("tensor `" + t.name + "` in " + c.shard_names[i] + " is not in the index's weight_map");
      } else if (m->second != c.shard_names[i]) {
        report.problems.push_back("tensor `" + t.name + "` is in " + c.shard_names[i] + " but the index maps it to " + m->second);
      }
    }
  }
  const bool all_read = std::all_of(report.files.begin(), report.files.end(), [](const auto& f) { return f.xxh64.has_value(); });
  check_total_size(*c.index, report.data_bytes, all_read, report);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(c.location.directory, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != *report.index && commit::is_pattern_output(name, c.location.pattern) && !shard_position.contains(name)) {
      report.warnings.push_back("stray file " + name + " matches the shard pattern but the index does not use it");
    }
  }
}

// 6. Content: every tensor's bytes against quicksave's checksum manifest (as loads read the
// folder), once everything else is sound.
void check_manifest(const Checkpoint& c, VerifyReport& report) {
  if (!report.problems.empty()) return;
  try {
    const ChecksumReport sums = verify_checksums(c.location.directory, c.location.pattern);
    report.manifest_found = sums.manifest_found;
    report.checksummed_tensors = sums.tensors_checked;
    for (const auto& m : sums.mismatches) report.problems.push_back("checksum: " + m.what);
  } catch (const Error& e) {
    report.problems.push_back(std::string("checksum: ") + e.what());
  }
}

}  // namespace

VerifyReport verify_checkpoint(const fs::path& path, const VerifyOptions& options) {
  VerifyReport report;
  report.path = path;
  report_interrupted_saves(path, report);
  std::optional<Checkpoint> checkpoint = find_files(path, report);
  if (!checkpoint) return report;
  const std::uint64_t total_file_bytes = open_files(*checkpoint, report);
  read_files(*checkpoint, options, total_file_bytes, report);
  check_index_against_shards(*checkpoint, report);
  check_manifest(*checkpoint, report);
  return report;
}

}  // namespace quicksave
