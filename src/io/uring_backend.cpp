// UringBackend: writes and reads through one io_uring (liburing), with registered buffers and
// files and a bounded queue depth. Everything that is not a write or a read is the blocking POSIX
// code in posix_ops. Reads travel exactly like writes (an Op with is_read set).
//
// Threads. The kernel cancels (ECANCELED) the io_uring requests a thread submitted, if they are
// still queued on its io-wq workers, when that thread exits. Callers' threads come and go (a
// thread pool shrinks, a test thread ends), so they never submit: write() takes a slot on the
// ring, or a place in the backlog when the ring is full (it never waits), and hands the op to the
// backend's own submitter thread. The reaper
// thread consumes completions, resubmits the rest of short writes itself, and runs callbacks.
// Both live as long as the backend.
//
// Locks. mutex_ guards the bookkeeping (slots, queues, counters); sq_mutex_ guards the
// submission side of the ring (get SQE, prep, submit) and is never held while taking mutex_.
// The kernel carries each Op pointer from submitter to reaper out of sight of the compiler
// and of ThreadSanitizer; the reaper therefore takes sq_mutex_ once before touching an op it has
// reaped: the submitter held that lock across the submission, so this orders the two.
#include <liburing.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/posix_ops.hpp"

namespace quicksave::io {

namespace {

// user_data of NOPs that carry no op: the shutdown wake-up, and a neutralised SQE (see submit_sq_locked).
constexpr std::uint64_t kNoOpUserData = 0;
// Files the ring addresses by slot instead of by descriptor (saves a file lookup per write).
constexpr unsigned kFixedFileSlots = 256;
// The kernel's limit on one registered buffer; bigger regions are registered in pieces.
constexpr std::size_t kMaxRegisteredBuffer = std::size_t{1} << 30;
// The kernel's limit on the number of registered buffers.
constexpr std::size_t kMaxRegisteredBuffers = 16384;
// An SQE's length is 32 bits; larger writes go in pieces of this size, continued like short writes.
constexpr std::size_t kMaxSubmitBytes = std::size_t{1} << 30;
constexpr unsigned kMaxQueueDepth = 32768;

std::string errno_text(int e) { return std::strerror(e); }

class UringBackend final : public detail::BlockingBackend {
 public:
  explicit UringBackend(unsigned queue_depth);
  ~UringBackend() override;

  std::string name() const override { return "io_uring"; }
  void register_buffers(std::span<const std::span<std::byte>> regions) override;
  FileHandle create(const fs::path& path, const OpenOptions& options) override;
  FileHandle open_read(const fs::path& path, bool direct) override;
  void close(FileHandle file) override;
  void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
             Completion done) override;
  void read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) override;
  void drain() override;
  BackendStats stats() const override;

 private:
  struct Op {
    std::shared_ptr<const detail::OpenFile> file;  // null when the handle was not open
    int fixed_slot = -1;                           // registered file slot, or -1: use file->fd
    int buffer_index = -1;                         // registered buffer, or -1: plain write
    bool is_read = false;                          // a read into `buffer` (const_cast back), else a write
    std::uint64_t offset = 0;
    const std::byte* buffer = nullptr;
    std::size_t length = 0;
    std::size_t written = 0;    // bytes done so far, read or written (an op may take several submissions)
    std::size_t submitted = 0;  // bytes asked for by the submission in flight
    Completion done;
    std::exception_ptr error;  // set before submission: the op goes round the ring as a NOP
  };
  struct Region {
    std::uintptr_t begin;
    std::uintptr_t end;
    int index;
  };

  // Takes a fixed file slot for a file just opened (a full table leaves it addressed by descriptor).
  void add_fixed_file(FileHandle handle);
  // Queues an op that write() or read() made: a slot on the ring or a place in the backlog.
  void enqueue(std::unique_ptr<Op> op, FileHandle file);
  // sq_mutex_ held. Puts the op's next step on the ring: the rest of its write, or a NOP when it
  // already carries an error. Returns 0, or -errno when the ring refused it.
  int submit_sq_locked(Op* op);
  // Submits under sq_mutex_; when the ring refuses, the op completes with that error.
  void submit_or_fail(Op* op);
  // mutex_ held. Index of the registered buffer that holds [p, p+n) entirely, else -1.
  int find_region_locked(const std::byte* p, std::size_t n) const;
  std::exception_ptr op_error(const char* call, int e, const Op& op, const char* extra = "") const;
  bool on_backend_thread() const;
  void run_submitter();
  void run_reaper();
  // An op has left the ring: frees its slot (handing it to a backlogged op), then reports it.
  void complete(std::unique_ptr<Op> op) noexcept;
  // Reports one finished op: stats, callback, then drain() accounting. Called without locks.
  // noexcept: a completion that throws has nowhere to go, like an exception leaving a thread.
  void finish(std::unique_ptr<Op> op) noexcept;

  io_uring ring_{};
  unsigned depth_;
  std::mutex sq_mutex_;
  mutable std::mutex mutex_;
  std::condition_variable idle_cv_;    // pending_ reached 0
  std::condition_variable submit_cv_;  // to_submit_ got an op, or stopping_
  unsigned in_flight_ = 0;             // slots taken: ops queued for the submitter or on the ring
  std::uint64_t pending_ = 0;          // write() calls whose callback has not returned yet
  std::deque<Op*> to_submit_;     // ops holding a slot, for the submitter thread
  // Writes made by a completion (on a backend thread) while the ring was full: a backend thread
  // cannot wait for room, since only the backend makes room, so they wait here for the next
  // slot that frees.
  std::deque<Op*> backlog_;
  std::vector<Region> regions_;  // sorted by begin
  std::uint64_t registered_regions_ = 0;
  bool fixed_files_ = false;
  std::vector<int> free_slots_;
  std::unordered_map<int, int> slot_of_;  // FileHandle id -> fixed file slot
  bool stopping_ = false;
  BackendStats stats_;
  std::thread submitter_;
  std::thread reaper_;
};

UringBackend::UringBackend(unsigned queue_depth) : depth_(queue_depth) {
  const int rc = io_uring_queue_init(depth_, &ring_, 0);
  if (rc < 0) throw Error(ErrorCode::unavailable, "io_uring_queue_init: " + errno_text(-rc), -rc);

  // IORING_OP_WRITE arrived in Linux 5.6, with the probe: a ring without it cannot do our job.
  io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
  const bool can_write = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                         io_uring_opcode_supported(probe, IORING_OP_WRITE_FIXED);
  if (probe != nullptr) io_uring_free_probe(probe);
  if (!can_write) {
    io_uring_queue_exit(&ring_);
    throw Error(ErrorCode::unavailable, "io_uring: the kernel does not support IORING_OP_WRITE (Linux < 5.6)");
  }

  // A sparse table (Linux 5.19) lets files be added one by one as they are created; without it
  // writes simply name descriptors.
  if (io_uring_register_files_sparse(&ring_, kFixedFileSlots) == 0) {
    fixed_files_ = true;
    for (int slot = static_cast<int>(kFixedFileSlots) - 1; slot >= 0; --slot) free_slots_.push_back(slot);
  }

  try {
    reaper_ = std::thread([this] { run_reaper(); });
    submitter_ = std::thread([this] { run_submitter(); });
  } catch (const std::system_error& e) {
    if (reaper_.joinable()) {
      // The reaper is waiting for a completion: give it the wake-up NOP.
      {
        std::lock_guard lock(mutex_);
        stopping_ = true;
      }
      std::lock_guard sq(sq_mutex_);
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kNoOpUserData);
      io_uring_submit(&ring_);
    }
    if (reaper_.joinable()) reaper_.join();
    io_uring_queue_exit(&ring_);
    throw Error(ErrorCode::resource_exhausted, std::string("io_uring backend: cannot start its threads: ") + e.what());
  }
}

UringBackend::~UringBackend() {
  drain();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  submit_cv_.notify_all();
  submitter_.join();
  {
    std::lock_guard sq(sq_mutex_);
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    // Nothing is in flight after drain(), so the ring has room; a ring that cannot take this NOP
    // is broken beyond use and the reaper could never be woken to be joined.
    if (sqe == nullptr) std::terminate();
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, kNoOpUserData);
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY);
    if (rc < 0) std::terminate();
  }
  reaper_.join();
  io_uring_queue_exit(&ring_);
}

void UringBackend::register_buffers(std::span<const std::span<std::byte>> regions) {
  // A write_fixed in flight must not see its buffer unregistered under it.
  drain();
  std::lock_guard lock(mutex_);
  if (!regions_.empty()) {
    io_uring_unregister_buffers(&ring_);
    regions_.clear();
    registered_regions_ = 0;
  }
  std::vector<iovec> iovecs;
  std::uint64_t nonempty = 0;
  for (const auto& region : regions) {
    if (region.empty()) continue;
    ++nonempty;
    for (std::size_t at = 0; at < region.size(); at += kMaxRegisteredBuffer) {
      iovecs.push_back(iovec{region.data() + at, std::min(kMaxRegisteredBuffer, region.size() - at)});
    }
  }
  if (iovecs.empty() || iovecs.size() > kMaxRegisteredBuffers) return;
  // Refusal (ENOMEM past RLIMIT_MEMLOCK, EFAULT for odd memory) only costs speed: writes from
  // these regions then go as plain writes, and stats() shows nothing registered.
  if (io_uring_register_buffers(&ring_, iovecs.data(), static_cast<unsigned>(iovecs.size())) < 0) return;
  for (std::size_t i = 0; i < iovecs.size(); ++i) {
    const auto begin = reinterpret_cast<std::uintptr_t>(iovecs[i].iov_base);
    regions_.push_back(Region{begin, begin + iovecs[i].iov_len, static_cast<int>(i)});
  }
  std::sort(regions_.begin(), regions_.end(), [](const Region& a, const Region& b) { return a.begin < b.begin; });
  registered_regions_ = nonempty;
}

FileHandle UringBackend::create(const fs::path& path, const OpenOptions& options) {
  const FileHandle handle = BlockingBackend::create(path, options);
  add_fixed_file(handle);
  return handle;
}

FileHandle UringBackend::open_read(const fs::path& path, bool direct) {
  const FileHandle handle = BlockingBackend::open_read(path, direct);
  add_fixed_file(handle);
  return handle;
}

void UringBackend::add_fixed_file(FileHandle handle) {
  if (!fixed_files_) return;
  auto open = files_.find(handle);
  std::lock_guard lock(mutex_);
  if (open && !free_slots_.empty()) {
    const int slot = free_slots_.back();
    int fd = open->fd;
    // A failed update just leaves this file addressed by descriptor.
    if (io_uring_register_files_update(&ring_, static_cast<unsigned>(slot), &fd, 1) == 1) {
      free_slots_.pop_back();
      slot_of_.emplace(handle.id, slot);
    }
  }
}

void UringBackend::close(FileHandle file) {
  {
    std::lock_guard lock(mutex_);
    auto it = slot_of_.find(file.id);
    if (it != slot_of_.end()) {
      int none = -1;
      // The slot holds a reference to the file; only a cleared slot can be given to another file.
      if (io_uring_register_files_update(&ring_, static_cast<unsigned>(it->second), &none, 1) == 1) {
        free_slots_.push_back(it->second);
      }
      slot_of_.erase(it);
    }
  }
  BlockingBackend::close(file);
}

void UringBackend::write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
                         Completion done) {
  auto op = std::make_unique<Op>();
  op->file = files_.find(file);
  op->offset = offset;
  op->buffer = buffer;
  op->length = length;
  op->done = std::move(done);
  enqueue(std::move(op), file);
}

void UringBackend::read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) {
  auto op = std::make_unique<Op>();
  op->file = files_.find(file);
  op->is_read = true;
  op->offset = offset;
  op->buffer = buffer;
  op->length = length;
  op->done = std::move(done);
  enqueue(std::move(op), file);
}

void UringBackend::enqueue(std::unique_ptr<Op> op, FileHandle file) {
  if (!op->file) op->error = std::make_exception_ptr(detail::closed_handle_error(op->is_read ? "io_uring read" : "io_uring write", file));

  std::unique_lock lock(mutex_);
  ++pending_;
  if (!op->error) {
    if (auto it = slot_of_.find(file.id); it != slot_of_.end()) op->fixed_slot = it->second;
    op->buffer_index = find_region_locked(op->buffer, op->length);
    if (op->buffer_index >= 0) ++(op->is_read ? stats_.registered_buffer_reads : stats_.registered_buffer_writes);
  }
  // Never block the caller: the engine calls write() from the staging workers right after each
  // copy, and waiting here for room in the ring would slow copying down to the disk's speed. Ops
  // beyond the queue depth wait in the backlog (bounded by the caller's buffers, e.g. the pool).
  if (in_flight_ >= depth_ || !backlog_.empty()) {
    backlog_.push_back(op.release());
    return;
  }
  ++in_flight_;
  to_submit_.push_back(op.release());
  lock.unlock();
  submit_cv_.notify_one();
}

void UringBackend::drain() {
  if (on_backend_thread()) {
    throw Error(ErrorCode::failed_precondition,
                "drain: called from a write completion on the io_uring backend; it would wait for itself");
  }
  std::unique_lock lock(mutex_);
  idle_cv_.wait(lock, [this] { return pending_ == 0; });
}

BackendStats UringBackend::stats() const {
  std::lock_guard lock(mutex_);
  BackendStats copy = stats_;
  copy.registered_regions = registered_regions_;
  return copy;
}

bool UringBackend::on_backend_thread() const {
  const auto self = std::this_thread::get_id();
  return self == reaper_.get_id() || self == submitter_.get_id();
}

int UringBackend::submit_sq_locked(Op* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // Every submission is flushed at once, so a full SQ means a refused earlier flush; retry it.
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return -EBUSY;
  }
  if (op->error) {
    io_uring_prep_nop(sqe);
  } else {
    const std::byte* from = op->buffer + op->written;
    op->submitted = std::min(op->length - op->written, kMaxSubmitBytes);
    const auto length = static_cast<unsigned>(op->submitted);
    const std::uint64_t at = op->offset + op->written;
    const int fd = op->fixed_slot >= 0 ? op->fixed_slot : op->file->fd;
    if (op->is_read) {
      auto* into = const_cast<std::byte*>(from);  // read() was given a writable buffer
      if (op->buffer_index >= 0) {
        io_uring_prep_read_fixed(sqe, fd, into, length, at, op->buffer_index);
      } else {
        io_uring_prep_read(sqe, fd, into, length, at);
      }
    } else if (op->buffer_index >= 0) {
      io_uring_prep_write_fixed(sqe, fd, from, length, at, op->buffer_index);
    } else {
      io_uring_prep_write(sqe, fd, from, length, at);
    }
    unsigned flags = op->fixed_slot >= 0 ? IOSQE_FIXED_FILE : 0;
    // Reads go to the kernel's io-wq workers at once: a read of cached data would otherwise be
    // copied inline by the one submitting thread, so a warm load would use a single core.
    if (op->is_read) flags |= IOSQE_ASYNC;
    io_uring_sqe_set_flags(sqe, flags);
  }
  io_uring_sqe_set_data(sqe, op);
  for (;;) {
    const int rc = io_uring_submit(&ring_);
    if (rc >= 0) return 0;
    // EAGAIN: the kernel is short of memory for a moment; EBUSY: completions must be reaped
    // first, which the reaper does without this lock.
    if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
      if (rc != -EINTR) std::this_thread::yield();
      continue;
    }
    // The SQE stays published in the ring and a later submit would run it after the op is
    // gone: make it a NOP that points at nothing.
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, kNoOpUserData);
    return rc;
  }
}

void UringBackend::submit_or_fail(Op* op) {
  int rc;
  {
    std::lock_guard sq(sq_mutex_);
    rc = submit_sq_locked(op);
  }
  if (rc == 0) return;
  op->error = op_error("io_uring_submit", -rc, *op);
  complete(std::unique_ptr<Op>(op));
}

int UringBackend::find_region_locked(const std::byte* p, std::size_t n) const {
  if (regions_.empty()) return -1;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  auto it = std::upper_bound(regions_.begin(), regions_.end(), begin,
                             [](std::uintptr_t value, const Region& r) { return value < r.begin; });
  if (it == regions_.begin()) return -1;
  --it;
  return begin + n <= it->end ? it->index : -1;
}

std::exception_ptr UringBackend::op_error(const char* call, int e, const Op& op, const char* extra) const {
  std::string context = detail::data_context(op.file ? op.file->path : fs::path(), op.offset, op.length);
  if (op.written > 0) context += (op.is_read ? ", read=" : ", written=") + std::to_string(op.written);
  context += extra;
  return std::make_exception_ptr(io_error(call, e, context));
}

void UringBackend::run_submitter() {
  std::deque<Op*> batch;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      submit_cv_.wait(lock, [this] { return stopping_ || !to_submit_.empty(); });
      if (to_submit_.empty()) return;
      batch.swap(to_submit_);
    }
    for (Op* op : batch) submit_or_fail(op);
    batch.clear();
  }
}

void UringBackend::run_reaper() {
  for (;;) {
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe(&ring_, &cqe);
    if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
    // Any other failure means the ring itself is gone: completions could never be delivered
    // and drain() would hang silently, so fail loudly instead.
    if (rc < 0) std::terminate();
    const std::uint64_t user_data = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);

    if (user_data == kNoOpUserData) {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      continue;
    }
    // See "Locks" at the top: this orders the submitter's writes to the op before our reads.
    { std::lock_guard sq(sq_mutex_); }
    std::unique_ptr<Op> op(reinterpret_cast<Op*>(user_data));
    if (!op->error) {
      if (res < 0) {
        op->error = op_error(op->is_read ? "io_uring read" : "io_uring write", -res, *op);
      } else if (res == 0 && op->written < op->length && op->is_read) {
        op->error = std::make_exception_ptr(
            detail::unexpected_end_of_file(op->file->path, op->offset, op->length, op->written));
      } else if (res == 0 && op->written < op->length) {
        // A regular file never accepts zero bytes of a non-empty write; resubmitting would spin.
        op->error = op_error("io_uring write", EIO, *op, ", wrote 0 bytes");
      } else {
        op->written += static_cast<std::size_t>(res);
        if (op->written < op->length) {
          if (static_cast<std::size_t>(res) < op->submitted && !op->is_read) {
            std::lock_guard lock(mutex_);
            ++stats_.short_write_continuations;
          }
          // The op keeps its slot. The reaper lives as long as the ring, so it may submit.
          int src;
          {
            std::lock_guard sq(sq_mutex_);
            src = submit_sq_locked(op.get());
          }
          if (src == 0) {
            op.release();
            continue;
          }
          op->error = op_error("io_uring_submit", -src, *op);
        }
      }
    }
    complete(std::move(op));
  }
}

void UringBackend::complete(std::unique_ptr<Op> op) noexcept {
  bool handed_on = false;
  {
    std::lock_guard lock(mutex_);
    --in_flight_;
    while (!backlog_.empty() && in_flight_ < depth_) {
      ++in_flight_;
      to_submit_.push_back(backlog_.front());
      backlog_.pop_front();
      handed_on = true;
    }
  }
  if (handed_on) submit_cv_.notify_one();
  finish(std::move(op));
}

void UringBackend::finish(std::unique_ptr<Op> op) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (op->is_read) {
      ++stats_.reads;
      if (op->error) {
        ++stats_.failed_reads;
      } else {
        stats_.bytes_read += op->length;
      }
    } else {
      ++stats_.writes;
      if (op->error) {
        ++stats_.failed_writes;
      } else {
        stats_.bytes_written += op->length;
      }
    }
  }
  // Moved, not copied: the error's last reference must not stay on this thread after the
  // callback hands it on (its count is invisible to ThreadSanitizer, which reports the free).
  op->done(std::move(op->error));
  // Whatever the callback captured is released before drain() can return.
  op.reset();
  std::lock_guard lock(mutex_);
  if (--pending_ == 0) idle_cv_.notify_all();
}

}  // namespace

std::unique_ptr<IoBackend> make_uring_backend(unsigned queue_depth) {
  if (queue_depth == 0 || queue_depth > kMaxQueueDepth) {
    throw Error(ErrorCode::invalid_argument,
                "io_uring backend: queue_depth must be between 1 and " + std::to_string(kMaxQueueDepth) +
                    ", got " + std::to_string(queue_depth));
  }
  return std::make_unique<UringBackend>(queue_depth);
}

}  // namespace quicksave::io
