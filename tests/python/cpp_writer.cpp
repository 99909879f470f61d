// python_cpp_writer: writes state dicts with the C++ API (quicksave::save_torch_state_dict), for
// test_byte_identity.py to compare with what the Python package writes for the same tensors.
//   python_cpp_writer CASES.json OUT_DIR
// CASES.json: [{"id", "input" (golden tensor descriptions), "kwargs" (save options)}]; each case
// is written into OUT_DIR/<id>. Tensors are built by tests/torch/golden_torch.hpp, which the
// Python tests mirror byte for byte.
#include <fstream>
#include <iostream>

#include "quicksave/error.hpp"
#include "torch/golden_torch.hpp"

namespace {

using nlohmann::ordered_json;

quicksave::ShardSize shard_size_of(const ordered_json& v) {
  return v.is_string() ? quicksave::ShardSize(v.get<std::string>()) : quicksave::ShardSize(v.get<std::int64_t>());
}

quicksave::TorchSaveOptions options_from(const ordered_json& kwargs) {
  quicksave::TorchSaveOptions o;
  if (kwargs.contains("filename_pattern")) o.filename_pattern = kwargs["filename_pattern"].get<std::string>();
  if (kwargs.contains("force_contiguous")) o.force_contiguous = kwargs["force_contiguous"];
  if (kwargs.contains("max_shard_size")) o.max_shard_size = shard_size_of(kwargs["max_shard_size"]);
  if (kwargs.contains("safe_serialization")) o.safe_serialization = kwargs["safe_serialization"];
  if (kwargs.contains("is_main_process")) o.is_main_process = kwargs["is_main_process"];
  if (kwargs.contains("shared_tensors_to_discard")) {
    o.shared_tensors_to_discard = kwargs["shared_tensors_to_discard"].get<std::vector<std::string>>();
  }
  if (kwargs.contains("metadata")) {
    for (const auto& [key, value] : kwargs["metadata"].items()) {
      if (value.is_string()) o.metadata.set(key, value.get<std::string>());
      else if (value.is_boolean()) o.metadata.set(key, value.get<bool>());
      else if (value.is_number_integer()) o.metadata.set(key, value.get<std::int64_t>());
      else if (value.is_number_float()) o.metadata.set(key, value.get<double>());
      else o.metadata.set(key, nullptr);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: python_cpp_writer CASES.json OUT_DIR\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  const ordered_json cases = ordered_json::parse(in);
  const std::filesystem::path out = argv[2];
  try {
    for (const auto& c : cases) {
      const auto state_dict = quicksave::testing::golden_state_dict(c["input"]);
      quicksave::save_torch_state_dict(state_dict, out / c["id"].get<std::string>(), options_from(c["kwargs"]));
    }
  } catch (const quicksave::Error& e) {
    std::cerr << "python_cpp_writer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
