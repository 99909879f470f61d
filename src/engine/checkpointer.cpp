// Checkpointer: owns the engine's long-lived parts (worker pool, I/O backend, pinned pool,
// copier) and admits saves; each save is a SaveJob. The only file that uses Boost.Asio.
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <set>

#include "commit/commit.hpp"
#include "commit/file_system.hpp"
#include "engine/checkpointer_access.hpp"
#include "engine/save_job.hpp"
#include "plan/env.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
#include "stage/cuda_copier.hpp"
#endif

namespace quicksave {

// The engine's save, as SaveHandle names it.
class SaveHandle::Job : public engine::SaveJob {
 public:
  using engine::SaveJob::SaveJob;
};

struct Checkpointer::Impl {
  explicit Impl(CheckpointerOptions opts) : options(std::move(opts)), workers(std::max(1u, options.worker_threads)) {}

  CheckpointerOptions options;
  boost::asio::thread_pool workers;
  std::unique_ptr<io::IoBackend> io;
  std::unique_ptr<commit::FileSystem> fs;
  std::string fallback_reason;
  std::unique_ptr<stage::PinnedPool> pool;
  std::unique_ptr<stage::Copier> host_copier;
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  std::unique_ptr<stage::CudaCopier> cuda_copier;  // chunks that read GPU memory
#endif

  std::mutex mutex;
  std::condition_variable idle;
  unsigned running = 0;
  struct Queued {
    std::shared_ptr<engine::SaveJob> job;
    std::filesystem::path target;
  };
  std::deque<Queued> waiting;
  // The folders of the saves running now. A second save into one of them waits in the queue
  // rather than on the folder's lock (which would hold a worker thread, or fail with busy).
  std::multiset<std::filesystem::path> running_targets;

  stage::Executor executor() {
    return [this](std::function<void()> task) { boost::asio::post(workers, std::move(task)); };
  }

  // Under `mutex`: the first waiting save that may start now, taken out of the queue.
  std::optional<Queued> next_startable() {
    if (running >= options.max_in_flight_saves) return std::nullopt;
    for (auto it = waiting.begin(); it != waiting.end(); ++it) {
      if (!running_targets.contains(it->target)) {
        Queued next = std::move(*it);
        waiting.erase(it);
        ++running;
        running_targets.insert(next.target);
        return next;
      }
    }
    return std::nullopt;
  }

  // A job ended (committed or failed): let the next waiting one in.
  void job_finished(engine::SaveJob* job, const std::filesystem::path& target) {
    std::vector<std::shared_ptr<engine::SaveJob>> start;
    {
      std::lock_guard lock(mutex);
      const auto queued = std::find_if(waiting.begin(), waiting.end(), [job](const auto& q) { return q.job.get() == job; });
      if (queued != waiting.end()) {
        waiting.erase(queued);  // cancelled before it started
      } else {
        --running;
        running_targets.erase(running_targets.find(target));
        while (auto next = next_startable()) start.push_back(std::move(next->job));
      }
    }
    idle.notify_all();
    for (auto& next : start) boost::asio::post(workers, [next] { next->start(); });
  }
};

namespace {

void validate(const CheckpointerOptions& o) {
  if (o.chunk_bytes == 0 || o.chunk_bytes % 4096 != 0) {
    throw Error(ErrorCode::invalid_argument, "chunk_bytes must be a positive multiple of 4096, got " + std::to_string(o.chunk_bytes));
  }
  if (o.pinned_budget_bytes < o.chunk_bytes) {
    throw Error(ErrorCode::invalid_argument, "pinned_budget_bytes (" + std::to_string(o.pinned_budget_bytes) +
                                                 ") must hold at least one chunk (" + std::to_string(o.chunk_bytes) + ")");
  }
  if (o.max_in_flight_saves == 0) throw Error(ErrorCode::invalid_argument, "max_in_flight_saves must be at least 1");
}

}  // namespace

CheckpointerOptions CheckpointerOptions::from_env() {
  CheckpointerOptions o;
  using plan::env_flag;
  using plan::env_size;
  o.pinned_budget_bytes = env_size("QUICKSAVE_PINNED_BUDGET", o.pinned_budget_bytes);
  o.chunk_bytes = env_size("QUICKSAVE_CHUNK_BYTES", o.chunk_bytes);
  o.worker_threads = static_cast<unsigned>(env_size("QUICKSAVE_WORKERS", o.worker_threads));
  o.queue_depth = static_cast<unsigned>(env_size("QUICKSAVE_QUEUE_DEPTH", o.queue_depth));
  o.max_in_flight_saves = static_cast<unsigned>(env_size("QUICKSAVE_MAX_IN_FLIGHT", o.max_in_flight_saves));
  o.direct_io = env_flag("QUICKSAVE_DIRECT_IO", o.direct_io);
  o.fsync = env_flag("QUICKSAVE_FSYNC", o.fsync);
  o.io_backend = plan::env_backend("QUICKSAVE_IO_BACKEND", o.io_backend);
  return o;
}

Checkpointer::Checkpointer(CheckpointerOptions options) : Checkpointer(options, Seams{}) {}

Checkpointer::Checkpointer(CheckpointerOptions options, Seams seams) {
  validate(options);
  impl_ = std::make_unique<Impl>(options);
  impl_->fs = seams.file_system ? std::move(seams.file_system) : commit::make_posix_file_system();
  if (seams.backend) {
    impl_->io = std::move(seams.backend);
  } else {
    io::BackendOptions io_options;
    io_options.kind = io::backend_kind(options.io_backend);
    io_options.queue_depth = options.queue_depth;
    io_options.posix_threads = std::max(1u, options.queue_depth / 2);
    impl_->io = io::make_backend(io_options, &impl_->fallback_reason);
  }
  stage::PoolOptions pool_options{.budget_bytes = options.pinned_budget_bytes, .buffer_bytes = options.chunk_bytes};
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  // Page-locked for the GPU when there is one, so that device-to-host copies into it are
  // asynchronous and run at full speed.
  pool_options.register_with_cuda = stage::cuda_device_count() > 0;
#endif
  impl_->pool = std::make_unique<stage::PinnedPool>(pool_options);
  const auto regions = impl_->pool->regions();
  impl_->io->register_buffers(regions);
  impl_->host_copier = stage::make_host_copier(impl_->executor());
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  impl_->cuda_copier = std::make_unique<stage::CudaCopier>(impl_->executor());
#endif
}

Checkpointer::~Checkpointer() {
  {
    std::unique_lock lock(impl_->mutex);
    impl_->idle.wait(lock, [this] { return impl_->running == 0 && impl_->waiting.empty(); });
  }
  impl_->workers.join();
}

SaveHandle Checkpointer::save_async(std::vector<TensorRef> tensors, const std::filesystem::path& directory,
                                    const SaveOptions& options) {
#if !(defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA)
  for (const auto& t : tensors) {
    if (t.device.kind == DeviceKind::cuda) {
      throw Error(ErrorCode::unavailable, "tensor `" + t.name + "` is on " + t.device.str() +
                                              " but this quicksave was built without CUDA support");
    }
  }
#endif
  plan::SavePlan plan = plan::make_save_plan(std::move(tensors), options, impl_->options.chunk_bytes);
  return CheckpointerAccess::submit(*this, std::move(plan), directory, options, nullptr);
}

SaveHandle CheckpointerAccess::submit(Checkpointer& checkpointer, plan::SavePlan plan, const std::filesystem::path& directory,
                                      const SaveOptions& options, std::unique_ptr<engine::SaveCoordinator> coordinator) {
  const std::unique_ptr<Checkpointer::Impl>& impl_ = checkpointer.impl_;
  engine::JobEnvironment env;
  env.executor = impl_->executor();
  env.io = impl_->io.get();
  env.fs = impl_->fs.get();
  env.checksums = options.checksums;
  env.wait_for_lock = options.wait_for_lock;
  env.pool = impl_->pool.get();
  env.host_copier = impl_->host_copier.get();
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  // With GPU tensors: records the producer streams' events now, on the caller's thread, so that
  // the save copies the weights as of this call, not after GPU work queued later.
  if (std::any_of(plan.tensors.begin(), plan.tensors.end(), [](const TensorRef& t) { return t.device.kind == DeviceKind::cuda; })) {
    env.device_copier = impl_->cuda_copier->begin_save(plan.tensors);
  }
#endif
  env.direct_io = impl_->options.direct_io;
  env.fsync = impl_->options.fsync;
  auto job = std::make_shared<SaveHandle::Job>(std::move(plan), directory, options.is_main_process, std::move(env),
                                               std::move(coordinator));
  const std::filesystem::path target = commit::normalized_target(directory);
  Checkpointer::Impl* impl = impl_.get();
  engine::SaveJob* raw = job.get();
  // Set after construction: the callback needs the job's address.
  job->set_on_finished([impl, raw, target] { impl->job_finished(raw, target); });
  bool start_now = false;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->running < impl_->options.max_in_flight_saves && !impl_->running_targets.contains(target)) {
      ++impl_->running;
      impl_->running_targets.insert(target);
      start_now = true;
    } else if (impl_->options.when_busy == WhenBusy::fail && impl_->running >= impl_->options.max_in_flight_saves) {
      throw Error(ErrorCode::resource_exhausted, std::to_string(impl_->running) + " saves are in flight (max_in_flight_saves)");
    } else {
      impl_->waiting.push_back(Checkpointer::Impl::Queued{job, target});
    }
  }
  if (start_now) boost::asio::post(impl_->workers, [job] { job->start(); });
  return SaveHandle(job);
}

SaveResult Checkpointer::save(std::vector<TensorRef> tensors, const std::filesystem::path& directory, const SaveOptions& options) {
  return save_async(std::move(tensors), directory, options).committed().get();
}

std::string Checkpointer::backend_name() const { return impl_->io->name(); }
std::string Checkpointer::backend_fallback_reason() const { return impl_->fallback_reason; }
std::uint64_t Checkpointer::pinned_bytes() const { return impl_->pool->allocated_bytes(); }
const CheckpointerOptions& Checkpointer::options() const { return impl_->options; }

namespace {

void require_valid(const std::shared_ptr<SaveHandle::Job>& job) {
  if (!job) throw Error(ErrorCode::failed_precondition, "this SaveHandle holds no save (default-constructed)");
}

}  // namespace

std::shared_future<void> SaveHandle::staged() const {
  require_valid(job_);
  return job_->staged();
}
std::shared_future<SaveResult> SaveHandle::committed() const {
  require_valid(job_);
  return job_->committed();
}
void SaveHandle::cancel() {
  require_valid(job_);
  job_->cancel();
}
SaveProgress SaveHandle::progress() const {
  require_valid(job_);
  return job_->progress();
}
void SaveHandle::when_staged(std::function<void()> callback) const {
  require_valid(job_);
  job_->when_staged(std::move(callback));
}
void SaveHandle::when_committed(std::function<void()> callback) const {
  require_valid(job_);
  job_->when_committed(std::move(callback));
}

}  // namespace quicksave
