// Real torch tensors built from the golden files' descriptions: one byte storage per label, each
// tensor a (dtype, offset, shape, strides) view of it; fresh empty tensors and meta tensors as
// described. Storage bytes are distinct per storage, so every saved value can be checked.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <map>
#include <string>

#include "quicksave/torch.hpp"

namespace quicksave::testing {

inline torch::ScalarType torch_dtype_named(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> table{
      {"bool", torch::kBool},     {"uint8", torch::kByte},       {"int8", torch::kChar},     {"int16", torch::kShort},
      {"int32", torch::kInt},     {"int64", torch::kLong},       {"float16", torch::kHalf},  {"bfloat16", torch::kBFloat16},
      {"float32", torch::kFloat}, {"float64", torch::kDouble},   {"complex64", torch::kComplexFloat}};
  return table.at(name);
}

inline StateDict golden_state_dict(const nlohmann::ordered_json& input) {
  StateDict sd;
  std::map<std::string, torch::Tensor> storages;
  int next_fill = 1;
  for (const auto& t : input) {
    if (t["kind"] != "tensor") continue;
    const auto dtype = torch_dtype_named(t["dtype"]);
    const auto shape = t["shape"].get<std::vector<std::int64_t>>();
    const auto stride = t["stride"].get<std::vector<std::int64_t>>();
    const auto options = torch::TensorOptions().dtype(dtype);
    if (t["device"] == "meta") {
      sd.insert(t["name"].get<std::string>(), torch::empty_strided(shape, stride, options.device(torch::kMeta)));
      continue;
    }
    if (t["storage_ptr_is_null"].get<bool>()) {  // a fresh empty tensor: no allocation at all
      sd.insert(t["name"].get<std::string>(), torch::empty(shape, options));
      continue;
    }
    const std::string label = t["storage"];
    auto it = storages.find(label);
    if (it == storages.end()) {
      const std::int64_t nbytes = t["storage_nbytes"];
      auto bytes = torch::arange(nbytes, torch::kLong).mul(7).add(next_fill++ * 31).remainder(251).to(torch::kByte);
      it = storages.emplace(label, bytes).first;
    }
    const std::int64_t itemsize = torch::elementSize(dtype);
    auto view = torch::empty({0}, options).set_(it->second.storage(), t["storage_offset_bytes"].get<std::int64_t>() / itemsize,
                                                shape, stride);
    sd.insert(t["name"].get<std::string>(), view);
  }
  return sd;
}

// The C-order bytes of a tensor, computed by torch (independently of quicksave's writer).
inline std::string torch_bytes(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

}  // namespace quicksave::testing
