// Test helpers: a temporary directory, synthetic state dicts whose every byte encodes a
// "generation", and a verifier that loads a checkpoint directory and says which generation it
// holds (or fails when it is incomplete, mixed or has leftovers).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "quicksave/reader.hpp"
#include "test_support.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::testing {

namespace fs = std::filesystem;


// `count` float32 tensors named "layers.<i>.weight" of `elements` each, every element == generation.
struct SyntheticStateDict {
  SyntheticStateDict(int generation, int count, std::size_t elements) {
    for (int i = 0; i < count; ++i) {
      auto buffer = std::make_shared<std::vector<float>>(elements, static_cast<float>(generation));
      TensorRef t{.name = "layers." + std::to_string(i) + ".weight", .dtype = DType::F32,
                  .shape = {static_cast<std::int64_t>(elements)}};
      t.data = t.storage_base = buffer->data();
      t.storage_nbytes = elements * sizeof(float);
      t.keepalive = buffer;
      tensors.push_back(std::move(t));
    }
  }
  std::vector<TensorRef> tensors;
};

inline bool has_leftovers(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".qs-") != std::string::npos) return true;
  }
  for (const auto& entry : fs::directory_iterator(dir.parent_path())) {
    const auto name = entry.path().filename().string();
    if (name.rfind("." + dir.filename().string() + ".qs-", 0) == 0) return true;
  }
  return false;
}

// Loads the checkpoint (index if present, else model.safetensors) and returns the generation all
// of its `count` tensors hold; nullopt (with a test failure message) when anything is off.
inline std::optional<int> checkpoint_generation(const fs::path& dir, int count) {
  std::vector<std::pair<std::string, std::string>> weight_map;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    weight_map = read_index_file(dir / "model.safetensors.index.json").weight_map;
  } else if (fs::exists(dir / "model.safetensors")) {
    for (int i = 0; i < count; ++i) weight_map.emplace_back("layers." + std::to_string(i) + ".weight", "model.safetensors");
  } else {
    ADD_FAILURE() << "no checkpoint in " << dir;
    return std::nullopt;
  }
  if (weight_map.size() != static_cast<std::size_t>(count)) {
    ADD_FAILURE() << "index lists " << weight_map.size() << " tensors, expected " << count;
    return std::nullopt;
  }
  std::optional<int> generation;
  std::set<std::string> files;
  for (const auto& [name, file] : weight_map) files.insert(file);
  for (const auto& file : files) {
    const auto st = SafetensorsFile::open(dir / file);
    for (const auto& entry : st.header().tensors) {
      const auto bytes = st.data(entry);
      const float* values = reinterpret_cast<const float*>(bytes.data());
      for (std::size_t k = 0; k < bytes.size() / 4; ++k) {
        const int g = static_cast<int>(values[k]);
        if (!generation) generation = g;
        if (*generation != g) {
          ADD_FAILURE() << "mixed generations in " << file << ": " << *generation << " and " << g;
          return std::nullopt;
        }
      }
    }
  }
  return generation;
}

}  // namespace quicksave::testing
