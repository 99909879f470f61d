// Distributed save across ranks over c10d (LibTorch's own distributed engine).
//
// Every rank calls save_async() collectively, in the same order. Two layouts, one output (the
// Hugging Face shards + index a single process would write for the union state dict):
//   replicated  (data parallel: every rank holds the same state dict): whole shards are assigned
//               to ranks with bytes balanced; each rank stages and writes only its shards;
//   partitioned (each rank holds a disjoint set of keys, as in pipeline parallelism): ranks
//               exchange names and sizes, agree on one global plan, and each writes the byte
//               ranges of the keys it holds (a shard may be written by several ranks).
// Rank 0 publishes the index only after every rank's files are durable; if any rank fails, no
// index is published, every rank's committed() throws an error naming the failing rank, and the
// temporaries are removed. staged() on a rank depends only on that rank's copies.
//
// Coordination uses a dedicated Gloo process group (plan exchange, at save_async) and the store
// (commit, on the engine's workers, with timeouts): never the training job's own groups, and a
// dead rank makes the others fail with a timeout error instead of hanging. The shared directory
// must be visible to every rank (one machine, or a shared filesystem).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>

#include "quicksave/checkpointer.hpp"
#include "quicksave/torch.hpp"

namespace quicksave {

enum class DistributedLayout { replicated, partitioned };

struct DistributedOptions {
  DistributedLayout layout = DistributedLayout::replicated;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  // waiting for another rank
  std::string name = "quicksave";  // key prefix in the store: one DistributedCheckpointer per name
};

class DistributedCheckpointer {
 public:
  DistributedCheckpointer(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                          CheckpointerOptions checkpointer_options = {}, DistributedOptions options = {});
  // From the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; torchrun sets
  // them): a TCPStore hosted by rank 0, shared with other users of that address (multi-tenant).
  static std::unique_ptr<DistributedCheckpointer> from_env(CheckpointerOptions checkpointer_options = CheckpointerOptions::from_env(),
                                                           DistributedOptions options = {});
  ~DistributedCheckpointer();

  // Collective. `local` is this rank's state dict (all of it when replicated, its keys when partitioned).
  SaveHandle save_async(const StateDict& local, const std::filesystem::path& directory, const SaveOptions& options = {});
  SaveResult save(const StateDict& local, const std::filesystem::path& directory, const SaveOptions& options = {});

  int rank() const;
  int world_size() const;
  Checkpointer& checkpointer();

  // Runs this rank's part of every save on `checkpointer` (tests give one whose I/O fails).
  DistributedCheckpointer(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                          std::unique_ptr<Checkpointer> checkpointer, DistributedOptions options = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The keys of `model`'s state dict, as a LoadModelOptions::key_filter: each rank loads only what
// it holds, opening only the shards that contain those keys.
std::function<bool(const std::string&)> keys_of(const torch::nn::Module& model);

}  // namespace quicksave
