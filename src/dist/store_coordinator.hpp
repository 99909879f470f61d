// StoreCoordinator: the distributed commit over a key-value store (c10d's Store in production,
// any KeyValueStore in tests). Keys live under a per-save prefix, so saves never mix. Each rank
// publishes a heartbeat while it takes part; a wait for another rank fails once that rank has been
// silent for the timeout, so a dead rank turns into an error naming it instead of a hang.
//
// Protocol (every rank runs it on an engine worker; rank 0 runs commit::Commit):
//   1. rank 0: Commit::begin, then set <p>/layout (where every output is staged);
//      other ranks: wait for <p>/layout.
//   2. each rank creates the files it owns, then sets <p>/created/<rank>; before opening a file
//      another rank owns, it waits for that owner's created key.
//   3. each rank writes, fsyncs and closes its files, then sets <p>/done/<rank>.
//   4. rank 0: waits for every done key, writes the index, Commit::publish, sets <p>/published;
//      other ranks: wait for <p>/published, then set <p>/seen/<rank>.
//   5. rank 0: waits for every seen key before returning, because the store often lives in rank
//      0's process (c10d TCPStore): were it to exit at once, a rank still polling for step 4's key
//      would lose the store and report a published save as failed. The checkpoint is already
//      published, so a rank that never answers only costs the timeout, never an error.
//   Failure anywhere: the failing rank sets <p>/failed = "rank R: <error>" (first one wins);
//   every wait above checks <p>/failed and throws it; other ranks remove the files they own and
//   set <p>/aborted/<rank>; rank 0 waits for those (or the timeout), then aborts the commit (its
//   staging area holds every rank's files). No index is ever published.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "engine/coordinator.hpp"

namespace quicksave::dist {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  // The value, or nullopt when the key does not exist (yet).
  virtual std::optional<std::string> try_get(const std::string& key) = 0;
  // Sets `key` only if it does not exist; returns the value it holds afterwards.
  virtual std::string set_if_absent(const std::string& key, const std::string& value) = 0;
};

struct CoordinatorConfig {
  std::shared_ptr<KeyValueStore> store;
  std::string prefix;  // unique per save, identical on every rank
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  // For each plan file: the rank that creates it (partitioned_file_owners / replicated_file_ranks).
  std::vector<int> file_owner;
};

std::unique_ptr<engine::SaveCoordinator> make_store_coordinator(CoordinatorConfig config, engine::Assignment assignment);

}  // namespace quicksave::dist
