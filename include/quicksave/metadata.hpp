// Ordered, JSON-typed metadata as the Hugging Face index carries it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace quicksave {

// One metadata value. safetensors file headers accept only strings; the index JSON accepts
// every alternative (Python writes user metadata "of whatever type it has").
using MetaValue = std::variant<std::string, std::int64_t, double, bool, std::nullptr_t>;

// Insertion-ordered key → value pairs (order is part of the index's bytes). Keys are unique.
class Metadata {
 public:
  using Entry = std::pair<std::string, MetaValue>;

  Metadata() = default;
  Metadata(std::initializer_list<Entry> entries);

  // Sets `key`, keeping its position if present, appending otherwise.
  void set(const std::string& key, MetaValue value);
  const MetaValue* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  bool erase(const std::string& key);

  const std::vector<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  friend bool operator==(const Metadata&, const Metadata&) = default;

 private:
  std::vector<Entry> entries_;
};

}  // namespace quicksave
