// Uses the installed core library: plans shards and lays out a safetensors header.
#include <quicksave/quicksave.hpp>

#include <cstdio>

int main() {
  std::vector<quicksave::SplitItem> items{{.name = "a", .storage_size = 6}, {.name = "b", .storage_size = 6}};
  const auto split = quicksave::split_state_dict_into_shards_factory(items, "model{suffix}.safetensors", "0.01KB");
  std::vector<quicksave::TensorSpec> specs{{"a", quicksave::DType::F32, {2, 3}}};
  const auto layout = quicksave::layout_file(specs, std::nullopt);
  std::printf("%zu shards, header %zu bytes\n", split.filename_to_tensors.size(), layout.header.size());
  return split.filename_to_tensors.size() == 2 && layout.header.size() % 8 == 0 ? 0 : 1;
}
