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
#include "quicksave/save.hpp"
#include "../test_support.hpp"
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
// of its `count` tensors hold; nullopt (with a test failure message) when anything is off. With
// `as_loaded`, reads the folder as quicksave's loaders do (through checkpoint_folder_view, so a
// folder holding an interrupted save's leftovers reads as its last complete checkpoint).
inline std::optional<int> checkpoint_generation(const fs::path& dir, int count, bool as_loaded = false) {
  CheckpointFolderView view;
  if (as_loaded) view = checkpoint_folder_view(dir);
  const auto file_of = [&](const std::string& name) -> std::optional<fs::path> {
    if (view.hidden.contains(name)) return std::nullopt;
    const auto it = view.redirected.find(name);
    const fs::path path = dir / (it == view.redirected.end() ? name : it->second);
    if (!fs::exists(path)) return std::nullopt;
    return path;
  };
  std::vector<std::pair<std::string, std::string>> weight_map;
  if (const auto index = file_of("model.safetensors.index.json")) {
    weight_map = read_index_file(*index).weight_map;
  } else if (file_of("model.safetensors")) {
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
  std::size_t tensors = 0;
  for (const auto& file : files) {
    const auto path = file_of(file);
    if (!path) {
      ADD_FAILURE() << "the index names " << file << ", which is not there";
      return std::nullopt;
    }
    const auto st = SafetensorsFile::open(*path);
    for (const auto& entry : st.header().tensors) {
      ++tensors;
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
  if (tensors != static_cast<std::size_t>(count)) {
    ADD_FAILURE() << "the files hold " << tensors << " tensors, expected " << count;
    return std::nullopt;
  }
  return generation;
}

}  // namespace quicksave::testing
