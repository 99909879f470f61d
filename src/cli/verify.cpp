// `quicksave verify PATH`: validates a checkpoint completely (quicksave::verify_checkpoint),
// reports one precise line per problem, and exits 0 only when the checkpoint is valid.
#include "cli/verify.hpp"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/cli.hpp"
#include "cli/progress.hpp"
#include "cli/text_format.hpp"
#include "format/checksum.hpp"
#include "quicksave/error.hpp"

namespace quicksave::cli {

VerifyReport verify_with_progress(const fs::path& path, bool progress) {
  std::optional<ProgressBar> bar;  // made once the total is known
  VerifyOptions options;
  if (progress) {
    options.progress = [&bar](std::uint64_t done, std::uint64_t total, const std::string& file) {
      if (!bar) bar.emplace("verify", total);
      bar->update(done, file);
    };
  }
  VerifyReport report = verify_checkpoint(path, options);
  bar.reset();  // erased before the report is printed
  return report;
}
namespace {

constexpr const char* kHelp = R"(Usage: quicksave verify PATH [--json]

Validates a checkpoint completely: every shard header (the safetensors reader's rules: lengths,
JSON, dtypes, offsets contiguous and in range, shapes matching byte counts, file size), the index
(JSON schema, shard names without absolute paths or `..`, metadata.total_size), index <-> shards
consistency (every weight_map entry exists in its shard, every shard tensor is in the index, no
tensor in two shards), and reads every byte (an XXH64 checksum per file is printed). When the
folder has quicksave's checksum manifest (written by every quicksave save), each tensor's bytes
are compared with the hashes taken when it was saved; a mismatch names the file, the tensor and
the byte range. It also
reports what an interrupted save left behind (run `quicksave recover` to repair it). Nothing is
changed on disk.

PATH  a checkpoint folder, its index (*.safetensors.index.json) or one .safetensors file

Options:
  --json   print the report as JSON
  --help   this text

Exit status: 0 the checkpoint is valid; 1 it is not (one line per problem); 2 usage error.
)";

nlohmann::json to_json(const VerifyReport& r) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : r.files) {
    files.push_back({{"file", f.name}, {"status", f.status}, {"bytes", f.bytes}, {"tensors", f.tensors},
                     {"xxh64", f.xxh64 ? nlohmann::json(format::hash_to_hex(*f.xxh64)) : nlohmann::json(nullptr)}});
  }
  nlohmann::json leftovers = nlohmann::json::array();
  for (const auto& l : r.leftovers) {
    leftovers.push_back({{"path", l.path.string()}, {"kind", l.kind}, {"save_in_progress", l.save_in_progress},
                         {"tag", l.tag}});
  }
  return {{"path", r.path.string()}, {"valid", r.valid()}, {"kind", r.kind},
          {"index", r.index ? nlohmann::json(*r.index) : nlohmann::json(nullptr)}, {"files", files},
          {"tensors", r.tensors}, {"data_bytes", r.data_bytes}, {"bytes_read", r.bytes_read},
          {"problems", r.problems}, {"warnings", r.warnings}, {"interrupted_save", leftovers},
          {"checksums", {{"manifest", r.manifest_found}, {"tensors", r.checksummed_tensors}}}};
}

}  // namespace

int run_verify(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {"json"}, {});
  const fs::path path = args.one_positional("PATH");
  const VerifyReport report = verify_with_progress(path, !args.flag("json"));
  if (args.flag("json")) {
    std::printf("%s\n", to_json(report).dump(2).c_str());
    return report.valid() ? kExitOk : kExitFailure;
  }
  std::string out = "verifying " + printable(path.string()) + ": ";
  if (report.kind == "sharded") {
    out += "sharded checkpoint, index " + printable(*report.index) + ", " + std::to_string(report.files.size()) + " shards\n";
  } else if (report.kind == "single") {
    out += "single-file checkpoint\n";
  } else {
    out += "no checkpoint found\n";
  }
  Table table({"status", "file", "size", "tensors", "xxh64"}, {2, 3});
  for (const auto& f : report.files) {
    const bool sized = f.status != "missing" && f.status != "not checked";
    table.add({f.status, f.name, sized ? human_bytes(f.bytes) : "-", f.status == "ok" ? std::to_string(f.tensors) : "-",
               f.xxh64 ? format::hash_to_hex(*f.xxh64) : "-"});
  }
  if (!report.files.empty()) out += table.str();
  if (report.manifest_found && report.valid()) {
    out += "checksums: " + std::to_string(report.checksummed_tensors) + " tensors match the manifest written at save time\n";
  } else if (!report.manifest_found && report.kind != "none") {
    out += "checksums: no quicksave manifest (tensor bytes checked for readability only)\n";
  }
  // Problems quote tensor and file names from the checkpoint: escaped, one line each.
  for (const auto& p : report.problems) out += "problem: " + printable(p) + "\n";
  for (const auto& w : report.warnings) out += "warning: " + printable(w) + "\n";
  if (std::any_of(report.leftovers.begin(), report.leftovers.end(), [](const auto& l) { return !l.save_in_progress; })) {
    std::error_code ec;
    const fs::path folder = fs::is_regular_file(path, ec) ? (path.parent_path().empty() ? fs::path(".") : path.parent_path()) : path;
    out += "hint: `quicksave recover " + folder.string() + "` completes or rolls back the interrupted save\n";
  }
  if (report.valid()) {
    out += "result: OK (" + std::to_string(report.files.size()) + (report.files.size() == 1 ? " file, " : " files, ") +
           std::to_string(report.tensors) + " tensors, " + human_bytes(report.bytes_read) + " read)\n";
  } else {
    out += "result: INVALID (" + std::to_string(report.problems.size()) + (report.problems.size() == 1 ? " problem)\n" : " problems)\n");
  }
  std::fputs(out.c_str(), stdout);
  return report.valid() ? kExitOk : kExitFailure;
}

}  // namespace quicksave::cli
