// PinnedPool: the bounded, reusable staging memory of the save pipeline.
//
// Buffers are allocated once when the pool is made (page-aligned, pre-faulted so that the first
// copy into them runs at memcpy speed rather than page-fault speed, optionally page-locked for the
// GPU with cudaHostRegister), then leased and returned for every save. The pool never allocates
// again, so memory does not grow with the number of saves; a lease that cannot be served waits.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

namespace quicksave::stage {

struct PoolOptions {
  std::uint64_t budget_bytes = 1ull << 30;  // total staging memory; at least one buffer
  std::uint64_t buffer_bytes = 8ull << 20;  // one lease; a multiple of the page size
  bool register_with_cuda = false;          // cudaHostRegister the memory (CUDA builds only)
};

class PinnedPool;

// Exclusive use of one buffer until destroyed (then it goes back to the pool).
class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  std::byte* data() const { return data_; }
  std::size_t capacity() const { return capacity_; }
  std::size_t index() const { return index_; }  // which buffer of the pool (== registered buffer index)
  explicit operator bool() const { return pool_ != nullptr; }
  void release();

 private:
  friend class PinnedPool;
  Lease(PinnedPool* pool, std::size_t index, std::byte* data, std::size_t capacity)
      : pool_(pool), index_(index), data_(data), capacity_(capacity) {}
  PinnedPool* pool_ = nullptr;
  std::size_t index_ = 0;
  std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
};

class PinnedPool {
 public:
  explicit PinnedPool(const PoolOptions& options);  // allocates and pre-faults everything
  ~PinnedPool();  // all leases must have been returned
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // Blocks until a buffer is free.
  Lease acquire();
  // A free buffer now, or an empty Lease.
  Lease try_acquire();
  // Calls `ready` with a lease as soon as one is free: at once on this thread if one is free
  // now, otherwise on the thread that returns a buffer. Waiters are served in order.
  void acquire_async(std::function<void(Lease)> ready);

  std::size_t buffer_count() const { return buffers_.size(); }
  std::size_t buffer_bytes() const { return buffer_bytes_; }
  std::uint64_t allocated_bytes() const { return static_cast<std::uint64_t>(buffers_.size()) * buffer_bytes_; }
  std::size_t free_count() const;
  bool cuda_registered() const { return cuda_registered_; }
  // Each buffer as a region, for IoBackend::register_buffers (index i == Lease::index()).
  std::vector<std::span<std::byte>> regions() const;

 private:
  friend class Lease;
  void give_back(std::size_t index);

  std::size_t buffer_bytes_ = 0;
  std::byte* memory_ = nullptr;
  std::size_t memory_bytes_ = 0;
  bool cuda_registered_ = false;
  std::vector<std::byte*> buffers_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  std::vector<std::size_t> free_;
  std::deque<std::function<void(Lease)>> waiters_;
};

}  // namespace quicksave::stage
