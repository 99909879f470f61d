// SaveJob: see save_job.hpp for the protocol.
#include "engine/save_job.hpp"

#include <cstring>

#include "commit/names.hpp"
#include "format/log.hpp"
#include "format/manifest.hpp"

#include "quicksave/error.hpp"

namespace quicksave::engine {
namespace {

std::uint64_t round_up(std::uint64_t n, std::uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

// True when a segment of `chunk` reads a tensor outside host memory (the device copier's chunks).
bool reads_device_memory(const plan::SavePlan& plan, const plan::Chunk& chunk) {
  for (const plan::Segment& segment : chunk.segments) {
    if (segment.tensor != plan::Segment::kHeader && segment.tensor < plan.tensors.size() &&
        plan.tensors[segment.tensor].device.kind != DeviceKind::cpu) {
      return true;
    }
  }
  return false;
}

}  // namespace

SaveJob::SaveJob(plan::SavePlan plan, std::filesystem::path directory, bool is_main_process, JobEnvironment env,
                 std::unique_ptr<SaveCoordinator> coordinator)
    : plan_(std::move(plan)),
      directory_(std::move(directory)),
      is_main_process_(is_main_process),
      env_(std::move(env)),
      coordinator_(coordinator ? std::move(coordinator) : make_local_coordinator(plan_)) {
  staged_future_ = staged_promise_.get_future().share();
  committed_future_ = committed_promise_.get_future().share();
}

SaveProgress SaveJob::progress() const {
  return SaveProgress{bytes_staged_.load(), bytes_written_.load(), plan_.total_file_bytes};
}

void SaveJob::post(std::function<void()> task) { env_.executor(std::move(task)); }

namespace {

// A completion callback's exception must not escape into the engine thread that ran it.
void run_callbacks(std::vector<std::function<void()>> callbacks) {
  for (auto& callback : callbacks) {
    try {
      callback();
    } catch (...) {
    }
  }
}

}  // namespace

void SaveJob::when_staged(std::function<void()> callback) { add_callback(staged_completion_, std::move(callback)); }

void SaveJob::when_committed(std::function<void()> callback) { add_callback(committed_completion_, std::move(callback)); }

void SaveJob::add_callback(Completion& completion, std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!completion.ready) {
      completion.callbacks.push_back(std::move(callback));
      return;
    }
  }
  run_callbacks({std::move(callback)});  // already ready: at once, on this thread
}

void SaveJob::mark_ready(Completion& completion) {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    completion.ready = true;
    callbacks.swap(completion.callbacks);
  }
  run_callbacks(std::move(callbacks));
}

void SaveJob::start() {
  {
    std::lock_guard lock(mutex_);
    if (failed_ || finished_) return;  // cancelled while it waited for admission
    ++outstanding_;
  }
  try {
    begin_commit_and_files();
    if (work_chunks().empty()) {  // nothing to write here (e.g. an empty state dict): still publish
      {
        std::lock_guard lock(mutex_);
        staged_set_ = true;
      }
      staged_promise_.set_value();
      mark_ready(staged_completion_);
      finalize();
    } else {
      auto self = shared_from_this();
      for (std::size_t i = 0; i < work_chunks().size(); ++i) {
        env_.pool->acquire_async([self, i](stage::Lease lease) {
          // Never work on the thread that returned the buffer: post, which also keeps chains of
          // immediately returned leases from recursing.
          auto shared = std::make_shared<stage::Lease>(std::move(lease));
          self->post([self, i, shared] { self->on_lease(i, shared); });
        });
      }
    }
  } catch (...) {
    fail(std::current_exception());
  }
  operation_done();
}

void SaveJob::begin_commit_and_files() {
  coordinator_->begin(*env_.fs, plan_, directory_,
                      CommitSettings{.is_main_process = is_main_process_, .wait_for_lock = env_.wait_for_lock,
                                     .checksums = env_.checksums});
  const Assignment& assignment = coordinator_->assignment();
  if (env_.checksums && coordinator_->publishes_manifest()) checksums_.emplace(plan_, work_chunks());
  const std::uint64_t alignment = env_.io->direct_alignment();
  chunks_left_in_file_.assign(plan_.files.size(), 0);
  for (const auto& chunk : work_chunks()) ++chunks_left_in_file_[chunk.file];
  files_left_ = assignment.files.size();
  chunks_to_stage_ = work_chunks().size();
  {
    std::lock_guard lock(mutex_);
    files_.clear();
    files_.resize(plan_.files.size());
  }
  for (const auto& work : assignment.files) {
    // Another process writes parts of a shared file at unaligned offsets: no O_DIRECT then.
    if (!work.owner) env_.direct_io = false;
  }
  const auto open = [&](const Assignment::File& work, const io::OpenOptions& options) {
    io::ScopedFile file = env_.io->create_scoped(coordinator_->staging_path(plan_.files[work.file].filename), options);
    std::lock_guard lock(mutex_);
    files_[work.file] = std::move(file);
  };
  for (const auto& work : assignment.files) {
    if (!work.owner) continue;
    const std::uint64_t file_bytes = plan_.files[work.file].file_bytes;
    if (env_.direct_io) {
      try {
        open(work, io::OpenOptions{.direct = true, .preallocate = round_up(file_bytes, alignment)});
        continue;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::unavailable) throw;
        env_.direct_io = false;  // this filesystem refuses O_DIRECT: buffered writes for this save
        format::log(LogLevel::warning, std::string("O_DIRECT refused, writing through the page cache instead: ") + e.what());
      }
    }
    open(work, io::OpenOptions{.preallocate = file_bytes});
  }
  coordinator_->files_created();
  coordinator_->wait_for_files_of_others();
  for (const auto& work : assignment.files) {
    if (!work.owner) open(work, io::OpenOptions{.truncate = false});
  }
}

void SaveJob::on_lease(std::size_t chunk_index, LeasePtr lease) {
  {
    std::lock_guard lock(mutex_);
    if (failed_ || finished_) return;  // the lease goes back to the pool with this task
    ++outstanding_;
  }
  auto self = shared_from_this();
  const plan::Chunk& chunk = work_chunks()[chunk_index];
  stage::Copier* copier =
      env_.device_copier && reads_device_memory(plan_, chunk) ? env_.device_copier.get() : env_.host_copier;
  copier->copy_chunk(plan_, chunk, lease->data(),
                     [self, chunk_index, lease](std::exception_ptr error) { self->on_staged(chunk_index, lease, error); });
}

void SaveJob::on_staged(std::size_t chunk_index, LeasePtr lease, std::exception_ptr error) {
  if (error) {
    fail(error);
    operation_done();
    return;
  }
  const plan::Chunk& chunk = work_chunks()[chunk_index];
  // While the bytes are in the pool (and likely in cache): the manifest's hashes cost no second pass.
  if (checksums_) checksums_->record(chunk_index, lease->data());
  bytes_staged_ += chunk.length;
  bool all_staged = false;
  bool stop = false;
  io::FileHandle file;
  {
    std::lock_guard lock(mutex_);
    stop = failed_;
    if (!stop && --chunks_to_stage_ == 0 && !staged_set_) all_staged = staged_set_ = true;
    file = files_[chunk.file].get();
  }
  if (stop) {
    operation_done();
    return;
  }
  if (all_staged) {
    // Every byte has been copied out: stop keeping the caller's tensors alive (a save of fresh
    // copies would otherwise hold them for as long as anyone holds the handle).
    for (auto& tensor : plan_.tensors) tensor.keepalive.reset();
    staged_promise_.set_value();
    mark_ready(staged_completion_);
  }
  std::size_t length = chunk.length;
  if (env_.direct_io) {
    const std::size_t padded = round_up(length, env_.io->direct_alignment());
    std::memset(lease->data() + length, 0, padded - length);  // zeros past the end, truncated in finish_file
    length = padded;
  }
  auto self = shared_from_this();
  try {
    env_.io->write(file, chunk.file_offset, lease->data(), length, [self, chunk_index, lease](std::exception_ptr write_error) {
      self->post([self, chunk_index, lease, write_error]() mutable {
        lease.reset();  // back to the pool before the completion work
        self->on_written(chunk_index, write_error);
      });
    });
  } catch (...) {
    fail(std::current_exception());
    operation_done();
  }
}

void SaveJob::on_written(std::size_t chunk_index, std::exception_ptr error) {
  if (error) {
    fail(error);
    operation_done();
    return;
  }
  const plan::Chunk& chunk = work_chunks()[chunk_index];
  bytes_written_ += chunk.length;
  bool file_done = false;
  io::FileHandle file;
  {
    std::lock_guard lock(mutex_);
    if (!failed_) file_done = --chunks_left_in_file_[chunk.file] == 0;
    file = files_[chunk.file].get();
  }
  if (!env_.direct_io && env_.fsync) env_.io->start_writeback(file, chunk.file_offset, chunk.length);
  if (file_done) finish_file(chunk.file);
  operation_done();
}

void SaveJob::finish_file(std::size_t file_index) {
  io::ScopedFile file;  // this file's last user: closed here on every path
  {
    std::lock_guard lock(mutex_);
    file = std::move(files_[file_index]);
  }
  try {
    const std::uint64_t size = plan_.files[file_index].file_bytes;
    if (env_.direct_io && size % env_.io->direct_alignment() != 0) env_.io->truncate(file.get(), size);
    if (env_.fsync) env_.io->sync(file.get());
    file.close();
  } catch (...) {
    fail(std::current_exception());
    return;
  }
  bool all_closed = false;
  {
    std::lock_guard lock(mutex_);
    all_closed = --files_left_ == 0 && !failed_;
  }
  if (all_closed) finalize();
}

void SaveJob::finalize() {
  try {
    SaveResult result;
    result.backend = env_.io->name() + (env_.direct_io ? "+O_DIRECT" : "");
    result.files = plan_.output_names();
    result.bytes_written = bytes_written_.load();
    if (plan_.index_filename && coordinator_->assignment().files.size() == plan_.files.size()) {
      result.bytes_written += plan_.index_json.size();  // this process writes the index too
    }
    {
      std::lock_guard lock(mutex_);
      if (failed_) return;  // cancelled or failed meanwhile: the failure path finishes the job
    }
    std::optional<std::string> manifest;
    if (checksums_) {
      manifest = format::manifest_to_json(checksums_->manifest());
      result.manifest = commit::manifest_name(plan_.pattern);
    }
    const commit::CommitResult committed = coordinator_->publish(plan_, manifest);
    result.commit_mode = committed.mode;
    result.removed_stale = committed.removed;
    {
      // Published is committed, whatever a late cancel() says.
      std::lock_guard lock(mutex_);
      finished_ = true;
    }
    for (const auto& warning : committed.warnings) format::log(LogLevel::warning, directory_.string() + ": " + warning);
    if (format::log_enabled(LogLevel::info)) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - submitted_).count();
      format::log(LogLevel::info, "saved " + directory_.string() + " (" + to_string(result.commit_mode) + ", " +
                                      std::to_string(result.files.size()) + " files, " + std::to_string(result.bytes_written) +
                                      " bytes, " + result.backend + ") in " + std::to_string(seconds) + " s after save_async");
    }
    committed_promise_.set_value(std::move(result));
    mark_ready(committed_completion_);
    // The previous checkpoint's tree: deleting big files blocks for seconds, so it happens
    // after `committed` has fired; then the folder's lock goes.
    coordinator_->release_previous();
    env_.on_finished();
  } catch (...) {
    fail(std::current_exception());
  }
}

void SaveJob::cancel() {
  {
    std::lock_guard lock(mutex_);
    if (failed_ || finished_) return;
    ++outstanding_;
  }
  fail(std::make_exception_ptr(Error(ErrorCode::cancelled, "save into " + directory_.string() + " was cancelled")));
  operation_done();
}

void SaveJob::fail(std::exception_ptr error) {
  std::lock_guard lock(mutex_);
  if (failed_ || finished_) return;
  failed_ = true;
  error_ = error;
}

void SaveJob::operation_done() {
  bool finish = false;
  {
    std::lock_guard lock(mutex_);
    --outstanding_;
    finish = failed_ && outstanding_ == 0 && !finished_;
    if (finish) finished_ = true;
  }
  if (finish) finish_failed();
}

void SaveJob::finish_failed() {
  files_.clear();  // closes what is still open (errors ignored: this save has failed already)
  coordinator_->abort(error_);  // temporaries removed, the previous checkpoint untouched
  bool set_staged = false;
  {
    std::lock_guard lock(mutex_);
    set_staged = !staged_set_;
    staged_set_ = true;
  }
  if (set_staged) {
    staged_promise_.set_exception(error_);
    mark_ready(staged_completion_);
  }
  committed_promise_.set_exception(error_);
  mark_ready(committed_completion_);
  env_.on_finished();
}

}  // namespace quicksave::engine
