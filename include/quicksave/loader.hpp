// The load engine, the mirror of the save engine: a checkpoint's tensor bytes are read in
// parallel (io_uring or pread on a thread pool, many reads in flight) straight into the memory
// the caller names, so a load into existing parameters makes no intermediate copy and a load
// that creates tensors allocates them once and fills them by reads.
//
//   LoadSource::open(path)          locates the files (the Hugging Face rules of load_torch_model,
//                                   a crashed folder read as its complete checkpoint), validates
//                                   every header and the index; reads no tensor byte.
//   Loader::load_async(source, targets)
//                                   reads each target's bytes; the handle's future is ready once
//                                   every read has finished (nothing writes into a target after
//                                   it, even after an error).
//
// With `direct_io` the reads bypass the page cache (O_DIRECT): they land in the Loader's bounded
// pool of aligned buffers, which is reused chunk after chunk, and are copied out from there.
// With `verify` each range of the checkpoint's checksum manifest is hashed as soon as its bytes
// have arrived (while they are still in the CPU cache); a mismatch fails the load naming the file,
// the tensor and the byte range. Targets are host memory (CUDA targets: load into host memory
// and copy; see the README).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "quicksave/checkpointer.hpp"
#include "quicksave/dtype.hpp"

namespace quicksave {

// One tensor of a checkpoint, as its header describes it.
struct CheckpointTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::string file;              // the shard's file name
  std::uint64_t nbytes = 0;
};

struct LoadSourceOptions {
  // The folder's file name pattern (default: the reference's model{suffix}.safetensors).
  std::optional<std::string> filename_pattern;
  // Require the checkpoint's checksum manifest (not_found without one) and check it against each
  // file's size and header now; the loads then hash every byte they read (LoadOptions::verify).
  bool verify = false;
  // When set, only the tensors it keeps are part of the source, and only the shards holding them
  // are opened (a rank that loads its own keys needs no other shard).
  std::function<bool(const std::string&)> key_filter;
};

// An opened safetensors checkpoint: a folder (sharded or single file) or one .safetensors file.
class LoadSource {
 public:
  // Throws not_found (no such path or checkpoint), corrupt (a header, index or manifest that
  // breaks a rule, an index entry missing from its shard), invalid_argument (not a regular file).
  static LoadSource open(const std::filesystem::path& path, const LoadSourceOptions& options = {});

  // Every tensor (that the key filter keeps), in the index's order (a single file: its header's order).
  const std::vector<CheckpointTensor>& tensors() const;
  // nullptr when the checkpoint has no tensor of that name.
  const CheckpointTensor* find(const std::string& name) const;
  // The shards' files (in first-appearance order), as paths to read.
  std::vector<std::filesystem::path> files() const;
  bool has_manifest() const;

  struct State;  // internal (src/load)
  const State& state() const { return *state_; }

 private:
  std::shared_ptr<const State> state_;
};

// Where one tensor's bytes go: C-contiguous host memory of exactly the tensor's size. The dtype
// and shape must be the checkpoint's (a load never converts; the torch layer casts).
struct LoadTarget {
  std::string name;
  void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  // Held by the load until its last read has finished, so memory that the caller lets go of
  // while reads are in flight (a dropped Python future) is not freed under them.
  std::shared_ptr<const void> keepalive;
};

// The defaults are measured (`quicksave bench --load`, 4 GB bf16 checkpoint, 2-core VM, ext4 on a
// virtual disk): pread on 16 threads with 16 MiB reads loaded cold in 2.2-2.7 s and warm in
// 0.52-0.54 s, io_uring (reads punted to its workers) in 2.5-3.5 s and 0.57-0.72 s, 4 MiB reads and
// 8 threads no better. O_DIRECT through the pool (4.5-8.5 s cold) lost to buffered reads here,
// so it stays an option for page-cache-hostile setups.
struct LoaderOptions {
  IoBackendChoice io_backend = IoBackendChoice::posix;
  unsigned queue_depth = 16;                 // reads in flight (io_uring queue / posix threads, at most 16)
  std::uint64_t read_bytes = 16ull << 20;    // the largest single read; a multiple of 4096
  bool direct_io = false;                    // O_DIRECT reads through the pool (cold data, no page cache)
  std::uint64_t pool_bytes = 256ull << 20;   // the pool for direct_io: allocated on first use, then reused
  unsigned worker_threads = 2;               // hashing and pool copy-out

  // The defaults overridden by QUICKSAVE_LOAD_IO_BACKEND (auto|io_uring|posix),
  // QUICKSAVE_LOAD_QUEUE_DEPTH, QUICKSAVE_LOAD_READ_BYTES, QUICKSAVE_LOAD_DIRECT_IO (0|1),
  // QUICKSAVE_LOAD_POOL_BYTES, QUICKSAVE_LOAD_WORKERS.
  static LoaderOptions from_env();
};

struct LoadOptions {
  // Hash every byte read against the manifest (the source must have been opened with verify).
  bool verify = false;
};

struct LoadProgress {
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_total = 0;
  std::uint64_t bytes_verified = 0;
};

class LoadHandle {
 public:
  LoadHandle() = default;
  bool valid() const { return job_ != nullptr; }
  // Ready when every read has finished; get() rethrows the load's first error.
  std::shared_future<void> done() const;
  // done().get(): waits, and rethrows the first error.
  void wait() const;
  LoadProgress progress() const;

  class Job;  // a load in the engine (opaque)

 private:
  friend class Loader;
  explicit LoadHandle(std::shared_ptr<Job> job) : job_(std::move(job)) {}
  std::shared_ptr<Job> job_;
};

class Loader {
 public:
  explicit Loader(const LoaderOptions& options = LoaderOptions::from_env());
  ~Loader();  // waits for the loads in flight
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts reading every target's bytes. Checks first, on this thread (throwing before anything
  // is read): each target names a tensor of `source` once, with its dtype and shape, and memory.
  LoadHandle load_async(const LoadSource& source, std::vector<LoadTarget> targets, const LoadOptions& options = {});
  void load(const LoadSource& source, std::vector<LoadTarget> targets, const LoadOptions& options = {}) {
    load_async(source, std::move(targets), options).wait();
  }

  // "io_uring" or "posix" (and why io_uring was not used, when it was not).
  std::string backend_name() const;
  std::string backend_fallback_reason() const;

  // A process-wide Loader with from_env() options, made on first use (the Hugging Face-style
  // loaders use it).
  static Loader& shared();

 private:
  friend class LoadHandle::Job;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quicksave
