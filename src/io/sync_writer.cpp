#include "io/sync_writer.hpp"

#include <future>
#include <memory>

#include "io/commit.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {
namespace {

constexpr std::size_t kMaxWriteBytes = 64ull << 20;
constexpr std::size_t kBounceBytes = 8ull << 20;

void write_blocking(IoBackend& io, FileHandle file, std::uint64_t offset, const std::byte* data, std::size_t length) {
  while (length > 0) {
    const std::size_t n = std::min(length, kMaxWriteBytes);
    std::promise<void> done;
    io.write(file, offset, data, n, [&done](std::exception_ptr error) {
      if (error) done.set_exception(error);
      else done.set_value();
    });
    done.get_future().get();
    offset += n;
    data += n;
    length -= n;
  }
}

// Closes the file on every path out of the scope.
class OpenFile {
 public:
  OpenFile(IoBackend& io, FileHandle handle) : io_(io), handle_(handle) {}
  ~OpenFile() {
    if (handle_) {
      try {
        io_.close(handle_);
      } catch (...) {
      }
    }
  }
  FileHandle get() const { return handle_; }
  void close() {
    io_.close(handle_);
    handle_ = FileHandle{};
  }

 private:
  IoBackend& io_;
  FileHandle handle_;
};

void write_file(const plan::SavePlan& plan, const plan::PlannedFile& file, const fs::path& path, IoBackend& io,
                const HostFetcher& fetch_to_host) {
  OpenFile out(io, io.create(path, OpenOptions{.preallocate = file.file_bytes}));
  write_blocking(io, out.get(), 0, reinterpret_cast<const std::byte*>(file.header.data()), file.header.size());
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
    if (tensor.is_contiguous()) {
      write_blocking(io, out.get(), planned.file_offset, static_cast<const std::byte*>(tensor.data), planned.nbytes);
      continue;
    }
    if (!bounce) bounce = std::make_unique<std::byte[]>(kBounceBytes);
    for (std::uint64_t done = 0; done < planned.nbytes; done += kBounceBytes) {
      const std::uint64_t n = std::min<std::uint64_t>(kBounceBytes, planned.nbytes - done);
      plan::copy_segment(tensor, done, n, bounce.get());
      write_blocking(io, out.get(), planned.file_offset + done, bounce.get(), n);
    }
  }
  io.sync(out.get());
  out.close();
}

}  // namespace

SaveResult write_plan_sync(const plan::SavePlan& plan, const fs::path& directory, bool is_main_process, IoBackend& io,
                           const HostFetcher& fetch_to_host) {
  Commit commit = Commit::begin(io, directory, plan.pattern, plan.output_names(), is_main_process);
  SaveResult result;
  result.backend = io.name();
  for (const auto& file : plan.files) {
    write_file(plan, file, commit.staging_path(file.filename), io, fetch_to_host);
    result.files.push_back(file.filename);
    result.bytes_written += file.file_bytes;
  }
  if (plan.index_filename) {
    io.write_file_durably(commit.staging_path(*plan.index_filename), plan.index_json);
    result.files.push_back(*plan.index_filename);
    result.bytes_written += plan.index_json.size();
  }
  CommitResult committed = commit.publish();
  result.commit_mode = to_string(committed.mode);
  result.removed_stale = committed.removed;
  if (committed.deferred_removal) {
    try {
      io.remove_all(*committed.deferred_removal);
    } catch (...) {
      // The new checkpoint is committed; recover() removes the old tree later.
    }
  }
  return result;
}

}  // namespace quicksave::io
