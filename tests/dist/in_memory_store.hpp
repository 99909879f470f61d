// A thread-safe in-memory KeyValueStore, so the distributed commit protocol can be tested with
// ranks as threads of one process.
#pragma once

#include <map>
#include <mutex>

#include "dist/store_coordinator.hpp"

namespace quicksave::testing {

class InMemoryStore : public dist::KeyValueStore {
 public:
  void set(const std::string& key, const std::string& value) override {
    std::lock_guard lock(mutex_);
    values_[key] = value;
  }
  std::optional<std::string> try_get(const std::string& key) override {
    std::lock_guard lock(mutex_);
    const auto it = values_.find(key);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  std::string set_if_absent(const std::string& key, const std::string& value) override {
    std::lock_guard lock(mutex_);
    return values_.try_emplace(key, value).first->second;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::string> values_;
};

}  // namespace quicksave::testing
