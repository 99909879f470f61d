// The C++ side of the parity tests (tests/parity/test_parity.py): saves state dicts with the C++
// API exactly as the Python test asks, so the C++ writer is compared with the real
// huggingface_hub too. Each state dict arrives as a torch.save file (which keeps views and shared
// storages); the job list has one line per save: INPUT.pt<TAB>OUTPUT_DIR<TAB>OPTIONS_JSON.
// A failed save writes its message to OUTPUT_DIR.err.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "quicksave/error.hpp"
#include "quicksave/torch.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s JOB_LIST\n", argv[0]);
    return 2;
  }
  std::ifstream jobs(argv[1]);
  int count = 0, failed = 0;
  for (std::string line; std::getline(jobs, line);) {
    const auto tab1 = line.find('\t');
    const auto tab2 = line.find('\t', tab1 + 1);
    const std::string input = line.substr(0, tab1);
    const std::string output = line.substr(tab1 + 1, tab2 - tab1 - 1);
    const auto options_json = nlohmann::json::parse(line.substr(tab2 + 1));
    ++count;
    try {
      const quicksave::StateDict sd = quicksave::load_state_dict_from_file(input);
      quicksave::TorchSaveOptions options;
      if (options_json.contains("max_shard_size")) {
        const auto& v = options_json["max_shard_size"];
        options.max_shard_size = v.is_string() ? quicksave::ShardSize(v.get<std::string>()) : quicksave::ShardSize(v.get<std::int64_t>());
      }
      if (options_json.contains("filename_pattern")) options.filename_pattern = options_json["filename_pattern"].get<std::string>();
      if (options_json.contains("force_contiguous")) options.force_contiguous = options_json["force_contiguous"];
      if (options_json.contains("safe_serialization")) options.safe_serialization = options_json["safe_serialization"];
      if (options_json.contains("shared_tensors_to_discard")) {
        options.shared_tensors_to_discard = options_json["shared_tensors_to_discard"].get<std::vector<std::string>>();
      }
      if (options_json.contains("metadata")) {
        for (const auto& [k, v] : options_json["metadata"].items()) {
          if (v.is_string()) options.metadata.set(k, v.get<std::string>());
          else if (v.is_number_integer()) options.metadata.set(k, v.get<std::int64_t>());
          else if (v.is_number_float()) options.metadata.set(k, v.get<double>());
          else if (v.is_boolean()) options.metadata.set(k, v.get<bool>());
        }
      }
      quicksave::save_torch_state_dict(sd, output, options);
    } catch (const std::exception& e) {
      ++failed;
      std::ofstream(output + ".err") << e.what();
    }
  }
  std::printf("parity driver: %d saves, %d refused\n", count, failed);
  return 0;
}
