// PosixBackend: asynchronous writes and reads made of blocking pwrite/pread calls on a small
// pool of threads.
// It is the backend that works everywhere (io_uring may be blocked by seccomp, or absent), so it
// stays deliberately simple: one queue, N workers, completions on the worker that did the write.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "io/posix_ops.hpp"

namespace quicksave::io {

namespace {

class PosixBackend final : public detail::BlockingBackend {
 public:
  explicit PosixBackend(unsigned threads);
  ~PosixBackend() override;

  std::string name() const override { return "posix"; }
  void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
             Completion done) override;
  void read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) override;
  void drain() override;
  BackendStats stats() const override;

 private:
  struct Job {
    std::shared_ptr<const detail::OpenFile> file;  // null when the handle was not open
    FileHandle handle;
    std::uint64_t offset = 0;
    const std::byte* buffer = nullptr;  // a write's source
    std::byte* read_into = nullptr;      // a read's destination (then buffer is null)
    std::size_t length = 0;
    Completion done;
  };

  void enqueue(Job job);

  void run_worker();
  // noexcept: a completion that throws has nowhere to go, like an exception leaving a thread.
  void execute(Job& job) noexcept;
  bool on_worker_thread() const;
  void stop_workers();

  mutable std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> queue_;
  std::uint64_t pending_ = 0;  // writes and reads queued or running, until their callback has returned
  bool stopping_ = false;
  BackendStats stats_;
  std::vector<std::thread> workers_;  // fixed after construction
};

PosixBackend::PosixBackend(unsigned threads) {
  try {
    workers_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run_worker(); });
  } catch (const std::system_error& e) {
    stop_workers();
    throw Error(ErrorCode::resource_exhausted, std::string("posix backend: cannot start writer threads: ") + e.what());
  }
}

PosixBackend::~PosixBackend() {
  // Workers empty the queue before they exit, so every queued write still gets its completion.
  stop_workers();
}

void PosixBackend::stop_workers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

void PosixBackend::write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
                         Completion done) {
  enqueue(Job{files_.find(file), file, offset, buffer, nullptr, length, std::move(done)});
}

void PosixBackend::read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) {
  enqueue(Job{files_.find(file), file, offset, nullptr, buffer, length, std::move(done)});
}

void PosixBackend::enqueue(Job job) {
  {
    std::lock_guard lock(mutex_);
    ++pending_;
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
}

void PosixBackend::drain() {
  if (on_worker_thread()) {
    throw Error(ErrorCode::failed_precondition,
                "drain: called from a write completion on the posix backend; it would wait for itself");
  }
  std::unique_lock lock(mutex_);
  idle_cv_.wait(lock, [this] { return pending_ == 0; });
}

BackendStats PosixBackend::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void PosixBackend::run_worker() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    execute(job);
  }
}

void PosixBackend::execute(Job& job) noexcept {
  const bool is_read = job.read_into != nullptr;
  std::exception_ptr error;
  std::uint64_t continued = 0;
  if (!job.file) {
    error = std::make_exception_ptr(detail::closed_handle_error(is_read ? "pread" : "pwrite", job.handle));
  } else {
    try {
      continued = is_read ? detail::read_all(job.file->fd, job.file->path, job.offset, job.read_into, job.length)
                          : detail::write_all(job.file->fd, job.file->path, job.offset, job.buffer, job.length);
    } catch (...) {
      error = std::current_exception();
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (is_read) {
      ++stats_.reads;
      if (error) {
        ++stats_.failed_reads;
      } else {
        stats_.bytes_read += job.length;
      }
    } else {
      ++stats_.writes;
      stats_.short_write_continuations += continued;
      if (error) {
        ++stats_.failed_writes;
      } else {
        stats_.bytes_written += job.length;
      }
    }
  }
  // Moved, not copied: the error's last reference must not stay on this thread after the
  // callback hands it on (its count is invisible to ThreadSanitizer, which reports the free).
  job.done(std::move(error));
  // Whatever the callback captured is released before drain() can return.
  job = Job{};
  std::lock_guard lock(mutex_);
  if (--pending_ == 0) idle_cv_.notify_all();
}

bool PosixBackend::on_worker_thread() const {
  const auto self = std::this_thread::get_id();
  return std::any_of(workers_.begin(), workers_.end(), [&](const std::thread& t) { return t.get_id() == self; });
}

}  // namespace

std::unique_ptr<IoBackend> make_posix_backend(unsigned threads) {
  if (threads == 0) throw Error(ErrorCode::invalid_argument, "posix backend: threads must be at least 1");
  return std::make_unique<PosixBackend>(threads);
}

}  // namespace quicksave::io
