// Writes checkpoints of every kind quicksave produces into a folder, with a manifest of what each
// tensor must contain (computed by torch, not by quicksave). check_files.py then verifies them
// with the Python standard library, numpy and Python's torch only.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "quicksave/torch.hpp"

namespace {

namespace fs = std::filesystem;
using quicksave::StateDict;

std::string hex(const torch::Tensor& t) {
  const auto c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  std::string out;
  char buf[3];
  for (std::int64_t i = 0; i < c.numel() * c.element_size(); ++i) {
    std::snprintf(buf, sizeof buf, "%02x", p[i]);
    out += buf;
  }
  return out;
}

std::string torch_name(torch::ScalarType t) {
  switch (t) {
    case torch::kBool: return "bool";
    case torch::kByte: return "uint8";
    case torch::kChar: return "int8";
    case torch::kShort: return "int16";
    case torch::kInt: return "int32";
    case torch::kLong: return "int64";
    case torch::kHalf: return "float16";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kComplexFloat: return "complex64";
    default: throw std::runtime_error("unexpected dtype");
  }
}

StateDict every_kind_of_tensor() {
  torch::manual_seed(3);
  StateDict sd;
  const torch::ScalarType dtypes[] = {torch::kBool, torch::kByte,    torch::kChar, torch::kShort, torch::kInt,  torch::kLong,
                                      torch::kHalf, torch::kBFloat16, torch::kFloat, torch::kDouble, torch::kComplexFloat};
  for (const auto dt : dtypes) {
    const std::string n = torch_name(dt);
    auto base = torch::randn({3, 5}, torch::kDouble).mul(100);
    sd.insert("dense." + n, dt == torch::kBool ? base.gt(0) : base.to(dt));
    sd.insert("scalar." + n, torch::tensor(7).to(dt));
    sd.insert("empty." + n, torch::empty({0, 4}, dt));
    sd.insert("transposed." + n, sd["dense." + n].t());
  }
  auto w = torch::randn({4, 6});
  sd.insert("tied.a", w);
  sd.insert("tied.b", w);                       // same view: stored once, "tied.b" → "tied.a" metadata
  sd.insert("view.rows", w.slice(0, 1, 3));     // a different view of w: its own bytes
  sd.insert("view.strided", w.select(1, 2));
  sd.insert("expanded", torch::randn({1, 4}).expand({3, 4}));
  sd.insert("poids_\xc3\xa9", torch::randn({2}));
  sd.insert("\xe6\x9d\x83\xe9\x87\x8d", torch::randn({2}));
  sd.insert("emoji_\xf0\x9f\x99\x82", torch::randn({2}));
  sd.insert("quote\"back\\slash", torch::randn({2}));
  return sd;
}

StateDict tiny_tensors(int count) {
  StateDict sd;
  for (int i = 0; i < count; ++i) sd.insert("block." + std::to_string(i) + ".bias", torch::full({3}, static_cast<float>(i)));
  return sd;
}

nlohmann::json manifest_of(const StateDict& sd, const std::vector<std::pair<std::string, std::string>>& tied) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& item : sd) {
    const auto& t = item.value();
    tensors.push_back({{"name", item.key()}, {"dtype", torch_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"hex", hex(t)}});
  }
  nlohmann::json aliases = nlohmann::json::array();
  for (const auto& [alias, kept] : tied) aliases.push_back({alias, kept});
  return {{"tensors", tensors}, {"aliases", aliases}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  fs::remove_all(out);
  nlohmann::json manifest;
  const StateDict sd = every_kind_of_tensor();
  const std::vector<std::pair<std::string, std::string>> tied = {{"tied.b", "tied.a"}};

  quicksave::save_torch_state_dict(sd, out / "single");
  manifest["single"] = manifest_of(sd, tied);
  manifest["single"]["format"] = "safetensors";

  quicksave::TorchSaveOptions sharded;
  sharded.max_shard_size = 200;
  quicksave::save_torch_state_dict(sd, out / "sharded", sharded);
  manifest["sharded"] = manifest_of(sd, tied);
  manifest["sharded"]["format"] = "safetensors";

  const StateDict tiny = tiny_tensors(10000);
  quicksave::TorchSaveOptions tiny_options;
  tiny_options.max_shard_size = quicksave::ShardSize("40KB");
  quicksave::save_torch_state_dict(tiny, out / "tiny", tiny_options);
  manifest["tiny"] = manifest_of(tiny, {});
  manifest["tiny"]["format"] = "safetensors";

  quicksave::TorchSaveOptions bin;
  bin.safe_serialization = false;
  quicksave::save_torch_state_dict(sd, out / "bin", bin);
  manifest["bin"] = manifest_of(sd, {});
  manifest["bin"]["format"] = "pickle";
  // torch.save keeps views of one storage as one storage; the planner keeps them in one shard.
  nlohmann::json shared = nlohmann::json::array({{"tied.a", "tied.b"}, {"tied.a", "view.rows"}, {"tied.a", "view.strided"}});
  for (const auto& item : sd) {
    if (item.key().starts_with("dense.")) shared.push_back({item.key(), "transposed." + item.key().substr(6)});
  }
  manifest["bin"]["shared"] = shared;
  bin.max_shard_size = 300;
  quicksave::save_torch_state_dict(sd, out / "bin_sharded", bin);
  manifest["bin_sharded"] = manifest["bin"];

  std::ofstream(out / "manifest.json") << manifest.dump(1);
  std::printf("wrote %zu checkpoints to %s\n", manifest.size(), out.c_str());
  return 0;
}
