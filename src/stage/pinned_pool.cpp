// PinnedPool: one anonymous mapping cut into equal buffers, handed out as leases.
//
// The memory is mapped, faulted in and (in CUDA builds, on request) page-locked once, in the
// constructor; after that the pool only moves buffer indices between a free list and leases, so
// staging memory is bounded by the budget and never grows with the number of saves.
//
// Waiting: blocking acquire() and acquire_async() share one FIFO queue of waiters. A returned
// buffer goes straight to the oldest waiter (never through the free list), so a buffer is on the
// free list only while nobody waits, and nobody can overtake a waiter that queued earlier.
#include "stage/pinned_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "quicksave/error.hpp"

#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace quicksave::stage {

// ---- Lease -----------------------------------------------------------------------------------

Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      index_(std::exchange(other.index_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      capacity_(std::exchange(other.capacity_, 0)) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = std::exchange(other.pool_, nullptr);
    index_ = std::exchange(other.index_, 0);
    data_ = std::exchange(other.data_, nullptr);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

Lease::~Lease() { release(); }

void Lease::release() {
  PinnedPool* pool = std::exchange(pool_, nullptr);
  const std::size_t index = std::exchange(index_, 0);
  data_ = nullptr;
  capacity_ = 0;
  if (pool != nullptr) pool->give_back(index);
}

// ---- PinnedPool ------------------------------------------------------------------------------

namespace {

std::string bytes_context(std::uint64_t budget, std::uint64_t buffer) {
  return "budget_bytes=" + std::to_string(budget) + ", buffer_bytes=" + std::to_string(buffer);
}

}  // namespace

PinnedPool::PinnedPool(const PoolOptions& options) {
  const long page_size = ::sysconf(_SC_PAGESIZE);
  const auto page = static_cast<std::uint64_t>(page_size > 0 ? page_size : 4096);
  if (options.buffer_bytes == 0 || options.budget_bytes == 0) {
    throw Error(ErrorCode::invalid_argument,
                "PinnedPool: buffer and budget sizes must be positive (" +
                    bytes_context(options.budget_bytes, options.buffer_bytes) + ")");
  }
  if (options.buffer_bytes > UINT64_MAX - (page - 1)) {
    throw Error(ErrorCode::invalid_argument,
                "PinnedPool: buffer size too large (" + bytes_context(options.budget_bytes, options.buffer_bytes) + ")");
  }
  const std::uint64_t buffer = (options.buffer_bytes + page - 1) / page * page;
  const std::uint64_t count = std::max<std::uint64_t>(1, options.budget_bytes / buffer);
  std::uint64_t total = 0;
  if (__builtin_mul_overflow(buffer, count, &total) || total > SIZE_MAX / 2) {
    throw Error(ErrorCode::invalid_argument,
                "PinnedPool: pool size overflows (" + bytes_context(options.budget_bytes, options.buffer_bytes) + ")");
  }

  void* memory = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (memory == MAP_FAILED) {
    const int err = errno;
    throw Error(ErrorCode::resource_exhausted,
                std::string("mmap: ") + std::strerror(err) + " (bytes=" + std::to_string(total) + ", " +
                    bytes_context(options.budget_bytes, options.buffer_bytes) + ")",
                err);
  }
  memory_ = static_cast<std::byte*>(memory);
  memory_bytes_ = static_cast<std::size_t>(total);
  // Lets khugepaged back the pool with huge pages (fewer TLB misses while copying); only a hint,
  // so a kernel without transparent huge pages refusing it changes nothing.
  (void)::madvise(memory_, memory_bytes_, MADV_HUGEPAGE);
  // MAP_POPULATE is best effort (it silently stops under memory pressure or RLIMIT_MEMLOCK-like
  // limits); writing every page guarantees the first save copies at memcpy speed.
  std::memset(memory_, 0, memory_bytes_);

#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  if (options.register_with_cuda) {
    const cudaError_t rc = ::cudaHostRegister(memory_, memory_bytes_, cudaHostRegisterDefault);
    if (rc != cudaSuccess) {
      (void)::cudaGetLastError();  // clear it so it does not surface in an unrelated later call
      ::munmap(memory_, memory_bytes_);
      memory_ = nullptr;
      throw Error(ErrorCode::unavailable, std::string("cudaHostRegister: ") + ::cudaGetErrorName(rc) +
                                              " (bytes=" + std::to_string(total) + ")");
    }
    cuda_registered_ = true;
  }
#endif

  buffer_bytes_ = static_cast<std::size_t>(buffer);
  buffers_.reserve(count);
  free_.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) buffers_.push_back(memory_ + i * buffer);
  // free_ is a stack: the lowest buffers are handed out first and the most recently returned
  // (cache-warm) buffer is reused first.
  for (std::uint64_t i = count; i-- > 0;) free_.push_back(static_cast<std::size_t>(i));
}

// Outstanding leases at destruction are a caller bug: they would point into unmapped memory and
// returning them would touch a destroyed pool. Debug builds assert; release builds unmap anyway
// rather than hang. Queued acquire_async waiters are dropped without being called.
PinnedPool::~PinnedPool() {
  std::deque<std::function<void(Lease)>> dropped;
  {
    std::lock_guard lock(mutex_);
    assert(free_.size() == buffers_.size() && "PinnedPool destroyed while leases are outstanding");
    dropped.swap(waiters_);
  }
  dropped.clear();  // outside the mutex: a waiter's captures may do anything when destroyed
#if defined(QUICKSAVE_HAVE_CUDA) && QUICKSAVE_HAVE_CUDA
  if (cuda_registered_) {
    (void)::cudaHostUnregister(memory_);
    (void)::cudaGetLastError();
  }
#endif
  if (memory_ != nullptr) ::munmap(memory_, memory_bytes_);
}

Lease PinnedPool::acquire() {
  std::unique_lock lock(mutex_);
  if (!free_.empty()) {
    const std::size_t index = free_.back();
    free_.pop_back();
    return Lease(this, index, buffers_[index], buffer_bytes_);
  }
  // Queue behind earlier waiters (blocking or not) and sleep until give_back hands us a buffer.
  // `slot` lives on this stack: the handing thread fills it under the mutex and notifies while
  // still holding it, so it never touches `slot` after this function can have returned.
  struct Slot {
    Lease lease;
    bool ready = false;
  } slot;
  waiters_.push_back([this, &slot](Lease lease) {
    std::lock_guard inner(mutex_);
    slot.lease = std::move(lease);
    slot.ready = true;
    freed_.notify_all();
  });
  freed_.wait(lock, [&slot] { return slot.ready; });
  return std::move(slot.lease);
}

Lease PinnedPool::try_acquire() {
  std::lock_guard lock(mutex_);
  if (free_.empty()) return Lease();
  const std::size_t index = free_.back();
  free_.pop_back();
  return Lease(this, index, buffers_[index], buffer_bytes_);
}

void PinnedPool::acquire_async(std::function<void(Lease)> ready) {
  if (!ready) throw Error(ErrorCode::invalid_argument, "PinnedPool::acquire_async: empty callback");
  std::size_t index = 0;
  {
    std::lock_guard lock(mutex_);
    if (free_.empty()) {
      waiters_.push_back(std::move(ready));
      return;
    }
    index = free_.back();
    free_.pop_back();
  }
  ready(Lease(this, index, buffers_[index], buffer_bytes_));
}

void PinnedPool::give_back(std::size_t index) {
  std::function<void(Lease)> waiter;
  {
    std::lock_guard lock(mutex_);
    if (waiters_.empty()) {
      free_.push_back(index);
      return;
    }
    waiter = std::move(waiters_.front());
    waiters_.pop_front();
  }
  // Outside the mutex: the waiter may acquire or release leases itself. It runs on this thread
  // (which is returning a lease, often a writer's completion); a throwing waiter terminates, as
  // Lease's destructor is noexcept.
  waiter(Lease(this, index, buffers_[index], buffer_bytes_));
}

std::size_t PinnedPool::free_count() const {
  std::lock_guard lock(mutex_);
  return free_.size();
}

std::vector<std::span<std::byte>> PinnedPool::regions() const {
  std::vector<std::span<std::byte>> regions;
  regions.reserve(buffers_.size());
  for (std::byte* buffer : buffers_) regions.emplace_back(buffer, buffer_bytes_);
  return regions;
}

}  // namespace quicksave::stage
