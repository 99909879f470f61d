#include "engine/sync_writer.hpp"

#include <future>
#include <memory>

#include "commit/commit.hpp"
#include "commit/names.hpp"
#include "engine/checksums.hpp"
#include "format/manifest.hpp"
#include "quicksave/error.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave::engine {

using io::FileHandle;
using io::IoBackend;
using io::OpenOptions;
namespace {

constexpr std::size_t kBounceBytes = 8ull << 20;

void write_file(const plan::SavePlan& plan, const plan::PlannedFile& file, const std::filesystem::path& path, IoBackend& io,
                const HostFetcher& fetch_to_host, TensorChecksums* checksums) {
  io::ScopedFile out = io.create_scoped(path, OpenOptions{.preallocate = file.file_bytes});
  io::write_blocking(io, out.get(), 0, reinterpret_cast<const std::byte*>(file.header.data()), file.header.size());
  std::unique_ptr<std::byte[]> bounce;
  for (const auto& planned : file.tensors) {
    if (planned.nbytes == 0) continue;
    TensorRef host_copy;
    const TensorRef* source = &plan.tensors[planned.source];
    if (source->device.kind != DeviceKind::cpu) {
      if (!fetch_to_host) {
        throw Error(ErrorCode::invalid_argument, "the synchronous writer reads host memory only; tensor `" + source->name +
                                                     "` is on " + source->device.str());
      }
      host_copy = fetch_to_host(*source);
      source = &host_copy;
    }
    const TensorRef& tensor = *source;
    if (checksums) checksums->record(planned.source, tensor);
    if (tensor.is_contiguous()) {
      io::write_blocking(io, out.get(), planned.file_offset, static_cast<const std::byte*>(tensor.data), planned.nbytes);
      continue;
    }
    if (!bounce) bounce = std::make_unique<std::byte[]>(kBounceBytes);
    for (std::uint64_t done = 0; done < planned.nbytes; done += kBounceBytes) {
      const std::uint64_t n = std::min<std::uint64_t>(kBounceBytes, planned.nbytes - done);
      stage::copy_segment(tensor, done, n, bounce.get());
      io::write_blocking(io, out.get(), planned.file_offset + done, bounce.get(), n);
    }
  }
  io.sync(out.get());
  out.close();
}

}  // namespace

std::vector<std::string> commit_outputs(const plan::SavePlan& plan, bool checksums) {
  std::vector<std::string> outputs = plan.output_names();
  if (checksums) outputs.push_back(commit::manifest_name(plan.pattern));
  return outputs;
}

SaveResult write_plan_sync(const plan::SavePlan& plan, const std::filesystem::path& directory, const SaveOptions& options,
                           IoBackend& io, commit::FileSystem& fs, const HostFetcher& fetch_to_host) {
  commit::Commit transaction = commit::Commit::begin(fs, directory,
                                                commit::BeginOptions{.pattern = plan.pattern,
                                                                     .outputs = commit_outputs(plan, options.checksums),
                                                                     .is_main_process = options.is_main_process,
                                                                     .wait_for_lock = options.wait_for_lock});
  std::optional<TensorChecksums> checksums;
  if (options.checksums) checksums.emplace(plan);
  SaveResult result;
  result.backend = io.name();
  for (const auto& file : plan.files) {
    write_file(plan, file, transaction.staging_path(file.filename), io, fetch_to_host, checksums ? &*checksums : nullptr);
    result.files.push_back(file.filename);
    result.bytes_written += file.file_bytes;
  }
  std::vector<std::pair<std::string, std::string>> small_files;
  if (plan.index_filename) {
    small_files.emplace_back(*plan.index_filename, plan.index_json);
    result.files.push_back(*plan.index_filename);
    result.bytes_written += plan.index_json.size();
  }
  if (checksums) {
    result.manifest = commit::manifest_name(plan.pattern);
    small_files.emplace_back(result.manifest, format::manifest_to_json(checksums->manifest()));
  }
  const commit::CommitResult committed = transaction.publish(small_files);
  result.commit_mode = committed.mode;
  result.removed_stale = committed.removed;
  transaction.release_previous();
  return result;
}

}  // namespace quicksave::engine
