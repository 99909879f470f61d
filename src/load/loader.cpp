// Loader: the load engine (quicksave/loader.hpp).
//
// The pipeline of one load (a LoadHandle::Job):
//   1. load_async checks the targets and plans the reads (read_plan.hpp) on the caller's thread;
//   2. every piece is handed to the I/O backend at once (io_uring keeps queue_depth reads in
//      flight and the rest in its backlog; posix has its reader threads), reading
//        buffered:   straight into the target's memory: the only copy is the kernel's;
//        direct_io:  the aligned blocks around the piece into a pool buffer (O_DIRECT), then a
//                    worker copies the piece out and returns the buffer, which the next piece
//                    waiting for one gets at once (the pool bounds the memory of a load);
//   3. when the last piece of a manifest range has landed, a worker hashes the range from the
//      target's memory and compares it with the manifest;
//   4. when every piece and hash is done, the files are closed and the future is made ready,
//      with the first error if there was one. Nothing writes into a target after that.
// A failure (a read error, a truncated file, a mismatch) stops pieces that have not been read
// yet; the ones in flight finish first, since their memory is the caller's.
#include "quicksave/loader.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <unordered_set>

#include "format/checksum.hpp"
#include "format/log.hpp"
#include "io/backend.hpp"
#include "load/load_source.hpp"
#include "load/read_plan.hpp"
#include "plan/env.hpp"
#include "quicksave/error.hpp"
#include "stage/pinned_pool.hpp"

namespace quicksave {

namespace {

constexpr std::uint64_t kAlignment = 4096;

std::uint64_t align_down(std::uint64_t value) { return value - value % kAlignment; }
std::uint64_t align_up(std::uint64_t value) { return align_down(value + kAlignment - 1); }

std::string shape_text(DType dtype, const std::vector<std::int64_t>& shape) {
  std::string out = std::string(dtype_name(dtype)) + " [";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

void validate(const LoaderOptions& o) {
  if (o.read_bytes == 0 || o.read_bytes % kAlignment != 0) {
    throw Error(ErrorCode::invalid_argument, "LoaderOptions: read_bytes must be a positive multiple of 4096, got " + std::to_string(o.read_bytes));
  }
  if (o.queue_depth == 0) throw Error(ErrorCode::invalid_argument, "LoaderOptions: queue_depth must be at least 1");
  if (o.worker_threads == 0) throw Error(ErrorCode::invalid_argument, "LoaderOptions: worker_threads must be at least 1");
  if (o.direct_io && o.pool_bytes < o.read_bytes + 2 * kAlignment) {
    throw Error(ErrorCode::invalid_argument, "LoaderOptions: pool_bytes (" + std::to_string(o.pool_bytes) +
                                                 ") must hold one read and its alignment (" + std::to_string(o.read_bytes + 2 * kAlignment) + ")");
  }
}

}  // namespace

LoaderOptions LoaderOptions::from_env() {
  LoaderOptions o;
  o.io_backend = plan::env_backend("QUICKSAVE_LOAD_IO_BACKEND", o.io_backend);
  o.queue_depth = static_cast<unsigned>(plan::env_size("QUICKSAVE_LOAD_QUEUE_DEPTH", o.queue_depth));
  o.read_bytes = plan::env_size("QUICKSAVE_LOAD_READ_BYTES", o.read_bytes);
  o.direct_io = plan::env_flag("QUICKSAVE_LOAD_DIRECT_IO", o.direct_io);
  o.pool_bytes = plan::env_size("QUICKSAVE_LOAD_POOL_BYTES", o.pool_bytes);
  o.worker_threads = static_cast<unsigned>(plan::env_size("QUICKSAVE_LOAD_WORKERS", o.worker_threads));
  return o;
}

struct Loader::Impl {
  explicit Impl(const LoaderOptions& o) : options(o), workers(o.worker_threads) {
    io::BackendOptions io_options;
    io_options.kind = io::backend_kind(o.io_backend);
    io_options.queue_depth = o.queue_depth;
    // Blocking reads need a thread each to be in flight; past 16 the disk, not the threads, limits.
    io_options.posix_threads = std::clamp(o.queue_depth, 1u, 16u);
    io = io::make_backend(io_options, &fallback_reason);
  }

  ~Impl() {
    std::unique_lock lock(mutex);
    idle.wait(lock, [this] { return loads_in_flight == 0; });
  }

  // The pool of aligned buffers for direct_io, made on first use and registered with the backend.
  stage::PinnedPool& pool() {
    // Its own lock: registering drains the backend, whose completions take `mutex`.
    std::lock_guard lock(pool_mutex);
    if (!pool_) {
      pool_ = std::make_unique<stage::PinnedPool>(
          stage::PoolOptions{.budget_bytes = options.pool_bytes, .buffer_bytes = options.read_bytes + 2 * kAlignment});
      io->register_buffers(pool_->regions());
    }
    return *pool_;
  }

  void post(std::function<void()> task) { boost::asio::post(workers, std::move(task)); }

  void load_started() {
    std::lock_guard lock(mutex);
    ++loads_in_flight;
  }
  void load_finished() {
    std::lock_guard lock(mutex);
    if (--loads_in_flight == 0) idle.notify_all();
  }

  LoaderOptions options;
  std::string fallback_reason;
  std::unique_ptr<io::IoBackend> io;
  std::mutex mutex;
  std::condition_variable idle;
  std::size_t loads_in_flight = 0;
  std::mutex pool_mutex;
  std::unique_ptr<stage::PinnedPool> pool_;
  // Last: destroyed first, so no worker runs while the rest goes.
  boost::asio::thread_pool workers;
};

class LoadHandle::Job : public std::enable_shared_from_this<LoadHandle::Job> {
 public:
  Job(Loader::Impl& loader, LoadSource source, std::vector<load::ResolvedTarget> targets, load::ReadPlan plan)
      : loader_(loader), source_(std::move(source)), targets_(std::move(targets)), plan_(std::move(plan)),
        range_pieces_left_(std::make_unique<std::atomic<std::uint32_t>[]>(plan_.ranges.size())),
        future_(promise_.get_future().share()) {
    for (std::size_t r = 0; r < plan_.ranges.size(); ++r) range_pieces_left_[r] = plan_.ranges[r].pieces;
  }

  std::shared_future<void> future() const { return future_; }
  LoadProgress progress() const { return {bytes_read_.load(), plan_.bytes, bytes_verified_.load()}; }

  // Opens the files and hands every piece to the backend (direct: to the pool first).
  void start(bool direct) {
    loader_.load_started();
    const auto& files = source_.state().files;
    // One count per piece, plus one held while pieces are handed out, so the job cannot finish
    // before the last one has been submitted.
    outstanding_ = plan_.pieces.size() + 1;
    try {
      buffered_.reserve(files.size());
      for (const auto& file : files) buffered_.push_back(loader_.io->open_read_scoped(file.path, false));
      if (direct) {
        for (const auto& file : files) {
          try {
            direct_.push_back(loader_.io->open_read_scoped(file.path, true));
          } catch (const Error& e) {
            if (e.code() != ErrorCode::unavailable) throw;
            format::log(LogLevel::info, std::string(e.what()) + "; reading it through the page cache");
            direct_.emplace_back();
          }
        }
      }
    } catch (...) {
      fail(std::current_exception());
      outstanding_ = 1;
      finish_one();
      return;
    }
    auto self = shared_from_this();
    stage::PinnedPool* pool = direct ? &loader_.pool() : nullptr;
    for (std::size_t i = 0; i < plan_.pieces.size(); ++i) {
      const auto& piece = plan_.pieces[i];
      if (pool != nullptr && direct_[piece.file]) {
        pool->acquire_async([self, i](stage::Lease lease) { self->read_through_pool(i, std::move(lease)); });
      } else {
        loader_.io->read(buffered_[piece.file].get(), piece.offset, destination(piece), piece.length,
                         [self, i](std::exception_ptr error) { self->landed(i, std::move(error)); });
      }
    }
    finish_one();
  }

 private:
  std::byte* destination(const load::ReadPiece& piece) const { return targets_[piece.target].data + piece.dst_offset; }

  // O_DIRECT: the piece's aligned blocks into the lease, then a worker copies the piece out. A
  // window that would reach past the end of the file (whose tail is not a whole block) is read
  // buffered instead, from the piece's first byte.
  void read_through_pool(std::size_t i, stage::Lease lease) {
    const auto& piece = plan_.pieces[i];
    if (failed_.load()) {
      finish_one();
      return;
    }
    const std::uint64_t file_size = source_.state().files[piece.file].size;
    std::uint64_t from = align_down(piece.offset);
    std::uint64_t to = align_up(piece.offset + piece.length);
    io::FileHandle handle = direct_[piece.file].get();
    if (to > file_size) {
      from = piece.offset;
      to = piece.offset + piece.length;
      handle = buffered_[piece.file].get();
    }
    std::byte* buffer = lease.data();
    auto self = shared_from_this();
    auto held = std::make_shared<stage::Lease>(std::move(lease));
    loader_.io->read(handle, from, buffer, to - from, [self, i, held, skip = piece.offset - from](std::exception_ptr error) {
      if (error) {
        held->release();
        self->landed(i, std::move(error));
        return;
      }
      self->loader_.post([self, i, held, skip] {
        const auto& piece = self->plan_.pieces[i];
        std::memcpy(self->destination(piece), held->data() + skip, piece.length);
        held->release();
        self->landed(i, nullptr);
      });
    });
  }

  // A piece's bytes are in the target (or its read failed).
  void landed(std::size_t i, std::exception_ptr error) {
    const auto& piece = plan_.pieces[i];
    if (error) {
      fail(std::move(error));
    } else {
      bytes_read_ += piece.length;
      if (piece.range >= 0 && --range_pieces_left_[static_cast<std::size_t>(piece.range)] == 0 && !failed_.load()) {
        // Counted until the hash is done; the piece's own count goes below.
        ++outstanding_;
        auto self = shared_from_this();
        loader_.post([self, range = static_cast<std::size_t>(piece.range)] {
          self->check_range(range);
          self->finish_one();
        });
      }
    }
    finish_one();
  }

  void check_range(std::size_t r) {
    const auto& range = plan_.ranges[r];
    const std::byte* bytes = targets_[range.target].data + range.dst_offset;
    if (format::xxh3_64(bytes, range.end - range.begin) == range.hash) {
      bytes_verified_ += range.end - range.begin;
      return;
    }
    const auto& state = source_.state();
    fail(std::make_exception_ptr(Error(ErrorCode::corrupt, "verify: " + state.files[range.file].name + ": tensor " +
                                                               state.tensors[targets_[range.target].tensor].name + " bytes [" +
                                                               std::to_string(range.begin) + ", " + std::to_string(range.end) +
                                                               ") do not match the manifest")));
  }

  void fail(std::exception_ptr error) {
    std::lock_guard lock(error_mutex_);
    if (!error_) error_ = std::move(error);
    failed_ = true;
  }

  void finish_one() {
    if (--outstanding_ != 0) return;
    std::exception_ptr error;
    try {
      for (auto& file : buffered_) file.close();
      for (auto& file : direct_) {
        if (file) file.close();
      }
    } catch (...) {
      error = std::current_exception();
    }
    buffered_.clear();
    direct_.clear();
    // No read writes into the targets any more: their memory may go.
    for (auto& target : targets_) target.keepalive.reset();
    {
      std::lock_guard lock(error_mutex_);
      if (error_) error = error_;
    }
    Loader::Impl& loader = loader_;
    if (error) {
      promise_.set_exception(error);
    } else {
      promise_.set_value();
    }
    loader.load_finished();
  }

  Loader::Impl& loader_;
  LoadSource source_;  // keeps the state the plan points into
  std::vector<load::ResolvedTarget> targets_;
  load::ReadPlan plan_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> range_pieces_left_;
  std::vector<io::ScopedFile> buffered_;  // [file]
  std::vector<io::ScopedFile> direct_;    // [file]; empty when direct_io is off (or refused for that file)
  std::atomic<std::size_t> outstanding_{0};
  std::atomic<std::uint64_t> bytes_read_{0};
  std::atomic<std::uint64_t> bytes_verified_{0};
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
  std::promise<void> promise_;
  std::shared_future<void> future_;
};

std::shared_future<void> LoadHandle::done() const {
  if (!job_) throw Error(ErrorCode::failed_precondition, "LoadHandle: not a load (default-constructed)");
  return job_->future();
}

void LoadHandle::wait() const { done().get(); }

LoadProgress LoadHandle::progress() const { return job_ ? job_->progress() : LoadProgress{}; }

Loader::Loader(const LoaderOptions& options) {
  validate(options);
  impl_ = std::make_unique<Impl>(options);
}

Loader::~Loader() = default;

std::string Loader::backend_name() const { return impl_->io->name(); }
std::string Loader::backend_fallback_reason() const { return impl_->fallback_reason; }

LoadHandle Loader::load_async(const LoadSource& source, std::vector<LoadTarget> targets, const LoadOptions& options) {
  const auto& state = source.state();
  if (options.verify && !state.has_manifest) {
    throw Error(ErrorCode::invalid_argument, "load: verify needs a source opened with LoadSourceOptions::verify (its checksum manifest)");
  }
  std::vector<load::ResolvedTarget> resolved;
  resolved.reserve(targets.size());
  std::unordered_set<std::string_view> seen;
  for (const auto& target : targets) {
    const auto it = state.by_name.find(target.name);
    if (it == state.by_name.end()) throw Error(ErrorCode::not_found, "load: the checkpoint has no tensor " + target.name);
    if (!seen.insert(target.name).second) throw Error(ErrorCode::invalid_argument, "load: tensor " + target.name + " is named twice");
    const CheckpointTensor& tensor = state.tensors[it->second];
    if (tensor.dtype != target.dtype || tensor.shape != target.shape) {
      throw Error(ErrorCode::invalid_argument, "load: tensor " + target.name + " is " + shape_text(tensor.dtype, tensor.shape) +
                                                   " in the checkpoint, the target is " + shape_text(target.dtype, target.shape));
    }
    if (target.data == nullptr && tensor.nbytes > 0) throw Error(ErrorCode::invalid_argument, "load: tensor " + target.name + " has no memory");
    resolved.push_back(load::ResolvedTarget{it->second, static_cast<std::byte*>(target.data), target.keepalive});
  }
  auto plan = load::plan_reads(state, resolved, impl_->options.read_bytes, options.verify);
  auto job = std::make_shared<LoadHandle::Job>(*impl_, source, std::move(resolved), std::move(plan));
  job->start(impl_->options.direct_io);
  return LoadHandle(std::move(job));
}

Loader& Loader::shared() {
  // Never destroyed: its threads and ring live until the process ends, so no load can outlive it
  // (Python's interpreter shutdown, static destructors of other libraries).
  static Loader* loader = new Loader(LoaderOptions::from_env());
  return *loader;
}

}  // namespace quicksave
