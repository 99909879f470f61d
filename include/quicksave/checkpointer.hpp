// The asynchronous save engine. save_async() plans the save on the caller's thread and returns
// at once; staging copies (into a bounded, reused pinned pool) and writes (io_uring or pwrite)
// run in the background, overlapping chunk by chunk, and the commit protocol publishes the
// checkpoint atomically. Two futures report the milestones:
//   staged()    every source byte has been copied out: the caller may change the weights again;
//   committed() every file is durable and published (get() rethrows the save's first error).
// The files are byte-identical to save_state_dict()'s (the synchronous reference writer).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "quicksave/save.hpp"
#include "quicksave/save_options.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave {

enum class IoBackendChoice { automatic, io_uring, posix };
enum class WhenBusy { wait, fail };

struct CheckpointerOptions {
  std::uint64_t pinned_budget_bytes = 1ull << 30;  // staging memory, allocated once
  std::uint64_t chunk_bytes = 8ull << 20;          // unit of copy and write; a multiple of 4096
  unsigned worker_threads = 2;                     // staging and completion work
  unsigned queue_depth = 16;                       // writes in flight (io_uring queue / posix threads)
  IoBackendChoice io_backend = IoBackendChoice::automatic;
  bool direct_io = false;                          // O_DIRECT writes (aligned chunks, padded tail)
  bool fsync = true;                               // make files durable before publishing
  unsigned max_in_flight_saves = 2;                // saves running at once (two into one folder run one after the other)
  WhenBusy when_busy = WhenBusy::wait;             // beyond that: queue the save, or refuse it

  // The defaults overridden by QUICKSAVE_PINNED_BUDGET ("2GB" or bytes), QUICKSAVE_CHUNK_BYTES,
  // QUICKSAVE_WORKERS, QUICKSAVE_QUEUE_DEPTH, QUICKSAVE_IO_BACKEND (auto|io_uring|posix),
  // QUICKSAVE_DIRECT_IO (0|1), QUICKSAVE_FSYNC (0|1), QUICKSAVE_MAX_IN_FLIGHT.
  static CheckpointerOptions from_env();
};

struct SaveProgress {
  std::uint64_t bytes_staged = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t bytes_total = 0;
};

// Internal entry points (src/engine/checkpointer_access.hpp): tests inject an I/O backend or a
// file system, and the distributed layer submits saves it planned itself.
class CheckpointerAccess;

class SaveHandle {
 public:
  SaveHandle() = default;
  bool valid() const { return job_ != nullptr; }
  std::shared_future<void> staged() const;
  std::shared_future<SaveResult> committed() const;
  // Stops the save as soon as possible; committed() then throws ErrorCode::cancelled and the
  // previous checkpoint is untouched (unless the save had already been published).
  void cancel();
  SaveProgress progress() const;
  // Runs `callback` once staged() (or committed()) is ready, successfully or not: at once on this
  // thread when it already is, otherwise on the engine thread that makes it ready. Each callback
  // runs exactly once and is then dropped. It runs on the engine's own threads, so it must be
  // short and must not block or wait for a save (hand the work to another thread); what it
  // throws is ignored.
  void when_staged(std::function<void()> callback) const;
  void when_committed(std::function<void()> callback) const;

  class Job;  // a save in the engine (opaque)

 private:
  friend class CheckpointerAccess;
  explicit SaveHandle(std::shared_ptr<Job> job) : job_(std::move(job)) {}
  std::shared_ptr<Job> job_;
};

// How a state dict of some framework becomes TensorRefs; the torch adapter specialises it for
// quicksave::StateDict, which lets save_async() take a LibTorch state dict directly.
template <class StateDictType>
struct TensorRefSource;

class Checkpointer {
 public:
  explicit Checkpointer(CheckpointerOptions options = {});
  // Waits for the saves in flight to complete or fail; never abandons one half-written.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  SaveHandle save_async(std::vector<TensorRef> tensors, const std::filesystem::path& directory,
                        const SaveOptions& options = {});
  template <class StateDictType>
  SaveHandle save_async(const StateDictType& state_dict, const std::filesystem::path& directory,
                        const SaveOptions& options = {}) {
    return save_async(TensorRefSource<StateDictType>::tensor_refs(state_dict), directory, options);
  }
  // Blocking form: committed().get().
  SaveResult save(std::vector<TensorRef> tensors, const std::filesystem::path& directory, const SaveOptions& options = {});

  std::string backend_name() const;
  // Why io_uring was not used, when it was asked for (or automatic) and fell back to posix.
  std::string backend_fallback_reason() const;
  std::uint64_t pinned_bytes() const;
  const CheckpointerOptions& options() const;

 private:
  friend class CheckpointerAccess;
  struct Impl;
  struct Seams;  // an injected I/O backend and file system
  Checkpointer(CheckpointerOptions options, Seams seams);
  std::unique_ptr<Impl> impl_;
};

}  // namespace quicksave
