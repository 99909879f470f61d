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

}  // namespace

VerifyReport verify_checkpoint(const fs::path& path, const VerifyOptions& options) {
  VerifyReport report;
  report.path = path;
  // 1. interrupted saves
  const std::vector<read::Leftover> leftovers = read::find_leftovers(checkpoint_folder(path));
  for (const auto& l : leftovers) report.leftovers.push_back({l.path, commit::to_string(l.kind), l.tag, l.save_in_progress});
  for (const auto& save : read::describe_leftovers(leftovers)) {
    (save.save_in_progress ? report.warnings : report.problems).push_back("interrupted " + save.description);
  }
  // 2. the checkpoint's files
  CheckpointLocation location;
  try {
    location = read::find_checkpoint(path);
  } catch (const Error& e) {
    report.problems.push_back(e.what());
    return report;
  }
  std::optional<ShardIndex> index;
  std::vector<std::string> shard_names;  // in the order the index first mentions them
  if (location.index_file) {
    report.kind = "sharded";
    report.index = location.index_file->filename().string();
    try {
      index = read_index_file(*location.index_file);
    } catch (const Error& e) {
      report.problems.push_back(std::string("index ") + *report.index + ": " + e.what());
      return report;
    }
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : index->weight_map) {
      if (seen.insert(shard).second) shard_names.push_back(shard);
    }
    if (index->weight_map.empty()) report.problems.push_back("index " + *report.index + ": weight_map is empty");
  } else {
    report.kind = "single";
    shard_names.push_back(location.single_file->filename().string());
  }

  // 3-4. every file: name, header, bytes
  std::vector<std::optional<SafetensorsFile>> opened(shard_names.size());
  std::uint64_t total_file_bytes = 0;
  for (std::size_t i = 0; i < shard_names.size(); ++i) {
    const std::string& name = shard_names[i];
    VerifiedFile file{.name = name};
    if (index) {
      try {
        validate_shard_filename(name, location.pattern, *report.index);
      } catch (const Error& e) {
        report.problems.push_back(e.what());
        file.status = "not checked";
        report.files.push_back(std::move(file));
        continue;
      }
    }
    try {
      opened[i] = SafetensorsFile::open(location.directory / name);
      file.bytes = opened[i]->file_size();
      file.tensors = opened[i]->header().tensors.size();
      total_file_bytes += file.bytes;
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        file.status = "missing";
        std::size_t mentions = 0;
        if (index) {
          for (const auto& [tensor, shard] : index->weight_map) mentions += shard == name;
        }
        report.problems.push_back("missing shard " + name + (index ? " (the index maps " + std::to_string(mentions) + " tensors to it)" : ""));
      } else {
        file.status = e.code() == ErrorCode::io ? "unreadable" : "invalid";
        std::error_code ec;
        file.bytes = fs::file_size(location.directory / name, ec);
        report.problems.push_back(e.what());
      }
    }
    report.files.push_back(std::move(file));
  }
  {
    for (std::size_t i = 0; i < shard_names.size(); ++i) {
      if (!opened[i]) continue;
      auto digest = checksum_file(opened[i]->path(), opened[i]->file_size(), options, total_file_bytes, report.bytes_read);
      if (auto* problem = std::get_if<std::string>(&digest)) {
        report.files[i].status = "unreadable";
        report.problems.push_back(*problem);
      } else {
        report.files[i].xxh64 = std::get<std::uint64_t>(digest);
      }
    }
  }
  for (std::size_t i = 0; i < shard_names.size(); ++i) {
    if (!opened[i]) continue;
    report.tensors += opened[i]->header().tensors.size();
    report.data_bytes += opened[i]->header().data_bytes();
  }

  // 5. index ↔ shards
  if (index) {
    std::map<std::string, std::size_t> shard_position;
    for (std::size_t i = 0; i < shard_names.size(); ++i) shard_position[shard_names[i]] = i;
    std::map<std::string, std::string> mapped(index->weight_map.begin(), index->weight_map.end());
    for (const auto& [tensor, shard] : index->weight_map) {
      const auto& file = opened[shard_position[shard]];
      if (file && file->find(tensor) == nullptr) {
        report.problems.push_back("tensor `" + tensor + "`: the index maps it to " + shard + ", which has no tensor of that name");
      }
    }
    std::map<std::string, std::string> found_in;  // tensor → first shard holding it
    for (std::size_t i = 0; i < shard_names.size(); ++i) {
      if (!opened[i]) continue;
      for (const auto& t : opened[i]->header().tensors) {
        const auto [it, first] = found_in.emplace(t.name, shard_names[i]);
        if (!first) {
          report.problems.push_back("tensor `" + t.name + "` appears in both " + it->second + " and " + shard_names[i]);
          continue;
        }
        const auto m = mapped.find(t.name);
        if (m == mapped.end()) {
          report.problems.push_back("tensor `" + t.name + "` in " + shard_names[i] + " is not in the index's weight_map");
        } else if (m->second != shard_names[i]) {
          report.problems.push_back("tensor `" + t.name + "` is in " + shard_names[i] + " but the index maps it to " + m->second);
        }
      }
    }
    const bool all_read = std::all_of(report.files.begin(), report.files.end(), [](const auto& f) { return f.xxh64.has_value(); });
    check_total_size(*index, report.data_bytes, all_read, report);
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(location.directory, ec)) {
      const std::string name = entry.path().filename().string();
      if (name != *report.index && commit::is_pattern_output(name, location.pattern) && !shard_position.contains(name)) {
        report.warnings.push_back("stray file " + name + " matches the shard pattern but the index does not use it");
      }
    }
  }
  // 6. content: every tensor's bytes against quicksave's checksum manifest (as loads read the folder)
  if (report.problems.empty()) {
    try {
      const ChecksumReport sums = verify_checksums(location.directory, location.pattern);
      report.manifest_found = sums.manifest_found;
      report.checksummed_tensors = sums.tensors_checked;
      for (const auto& m : sums.mismatches) report.problems.push_back("checksum: " + m.what);
    } catch (const Error& e) {
      report.problems.push_back(std::string("checksum: ") + e.what());
    }
  }
  return report;
}

}  // namespace quicksave
