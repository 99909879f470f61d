// SaveJob: one asynchronous save, from its plan to its commit. The protocol:
//   1. start (worker): the coordinator begins the commit; create the files this process owns
//      (preallocated), open those it shares, ask the pool for one lease per chunk of its
//      assignment (served first-come first-served as buffers free up);
//   2. per chunk, as its lease arrives (worker): the copier fills the lease; its tensor bytes are
//      hashed there for the checksum manifest; when the last chunk is staged, `staged` fires;
//   3. per chunk, once staged: the backend writes it (O_DIRECT: padded to the alignment); when it
//      lands, the lease goes back to the pool and write-back of the range is started;
//   4. per file, when its last chunk has landed (worker): truncate the padding, fsync, close;
//   5. when every file is closed (worker): the coordinator publishes (the index and manifest, then
//      the commit protocol of commit/commit.cpp), `committed` fires; removing the previous
//      checkpoint's tree (exchange mode) and releasing the folder's lock come after, off the
//      critical path.
// The first error (or cancel()) stops new work; once every copy and write in flight has come
// back, files are closed, the coordinator aborts (temporaries removed, previous checkpoint
// untouched) and both futures carry the error. Nothing throws across threads.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>

#include "commit/file_system.hpp"
#include "engine/checksums.hpp"
#include "engine/coordinator.hpp"
#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/checkpointer.hpp"
#include "stage/copier.hpp"
#include "stage/pinned_pool.hpp"

namespace quicksave::engine {

struct JobEnvironment {
  stage::Executor executor;
  io::IoBackend* io = nullptr;
  commit::FileSystem* fs = nullptr;
  stage::PinnedPool* pool = nullptr;
  stage::Copier* host_copier = nullptr;
  // Chunks that read GPU memory go to this save's device copier (CUDA builds, saves with CUDA
  // tensors; null otherwise), which holds the producer events recorded at save_async.
  std::shared_ptr<stage::Copier> device_copier;
  bool direct_io = false;
  bool fsync = true;
  bool checksums = true;       // hash the staged bytes into the manifest (when the coordinator publishes one)
  bool wait_for_lock = false;  // another writer holds the folder: wait rather than fail with busy
  // Called once when the job has finished for good (after both futures are set).
  std::function<void()> on_finished;
};

class SaveJob : public std::enable_shared_from_this<SaveJob> {
 public:
  // `coordinator` decides which files and byte ranges this process writes and how they are
  // published; by default (nullptr) everything, through a single-process commit.
  SaveJob(plan::SavePlan plan, std::filesystem::path directory, bool is_main_process, JobEnvironment env,
          std::unique_ptr<SaveCoordinator> coordinator = nullptr);

  void set_on_finished(std::function<void()> callback) { env_.on_finished = std::move(callback); }
  void start();
  void cancel();

  std::shared_future<void> staged() const { return staged_future_; }
  std::shared_future<SaveResult> committed() const { return committed_future_; }
  SaveProgress progress() const;
  // SaveHandle::when_staged / when_committed: `callback` runs once the future is ready.
  void when_staged(std::function<void()> callback);
  void when_committed(std::function<void()> callback);

 private:
  using LeasePtr = std::shared_ptr<stage::Lease>;

  void begin_commit_and_files();
  void on_lease(std::size_t chunk, LeasePtr lease);
  void on_staged(std::size_t chunk, LeasePtr lease, std::exception_ptr error);
  void on_written(std::size_t chunk, std::exception_ptr error);
  void finish_file(std::size_t file);
  void finalize();
  void fail(std::exception_ptr error);
  // Called after every piece of outstanding work returns; finishes a failed job when it was the last.
  void operation_done();
  void finish_failed();
  void post(std::function<void()> task);
  // Callbacks waiting for one of the two futures (guarded by mutex_). `ready` is set only after
  // the promise, so a callback registered later runs at once and sees a ready future.
  struct Completion {
    bool ready = false;
    std::vector<std::function<void()>> callbacks;
  };
  // Registers `callback`, or runs it at once when `completion` is already ready.
  void add_callback(Completion& completion, std::function<void()> callback);
  // Called right after the promise is set: marks it ready and runs the callbacks registered so
  // far, outside the mutex.
  void mark_ready(Completion& completion);

  plan::SavePlan plan_;
  std::filesystem::path directory_;
  const std::chrono::steady_clock::time_point submitted_ = std::chrono::steady_clock::now();  // for the log's summary
  bool is_main_process_;
  JobEnvironment env_;

  const std::vector<plan::Chunk>& work_chunks() const { return coordinator_->assignment().chunks; }

  std::unique_ptr<SaveCoordinator> coordinator_;
  std::optional<ChecksumRecorder> checksums_;  // set in begin_commit_and_files when the manifest is published
  std::vector<io::ScopedFile> files_;  // indexed like plan_.files; open only for assigned files, until finish_file
  std::vector<std::size_t> chunks_left_in_file_;  // guarded by mutex_
  std::size_t files_left_ = 0;                    // guarded by mutex_
  std::size_t chunks_to_stage_ = 0;               // guarded by mutex_

  std::mutex mutex_;
  bool failed_ = false;
  bool finished_ = false;
  std::exception_ptr error_;
  std::size_t outstanding_ = 0;  // copies, writes and file closes in flight (guarded by mutex_)

  std::atomic<std::uint64_t> bytes_staged_{0};
  std::atomic<std::uint64_t> bytes_written_{0};

  std::promise<void> staged_promise_;
  bool staged_set_ = false;  // guarded by mutex_
  std::shared_future<void> staged_future_;
  std::promise<SaveResult> committed_promise_;
  std::shared_future<SaveResult> committed_future_;
  Completion staged_completion_;
  Completion committed_completion_;
};

}  // namespace quicksave::engine
