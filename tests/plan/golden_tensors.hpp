// Builds TensorRefs from the golden files' tensor descriptions (storage label, byte offset,
// shape, strides, dtype) over real host buffers, so the planner can be checked against the
// reference without LibTorch. Each storage is filled with distinct bytes.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "quicksave/tensor_ref.hpp"

namespace quicksave::testing {

inline std::optional<DType> dtype_from_torch_name(const std::string& name) {
  static const std::map<std::string, DType> table{
      {"bool", DType::BOOL},       {"uint8", DType::U8},     {"int8", DType::I8},     {"int16", DType::I16},
      {"int32", DType::I32},       {"int64", DType::I64},    {"float16", DType::F16}, {"bfloat16", DType::BF16},
      {"float32", DType::F32},     {"float64", DType::F64},  {"complex64", DType::C64}, {"uint16", DType::U16},
      {"uint32", DType::U32},      {"uint64", DType::U64},   {"float8_e4m3fn", DType::F8_E4M3},
      {"float8_e5m2", DType::F8_E5M2}};
  auto it = table.find(name);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

class GoldenStateDict {
 public:
  // Entries of kind "string" are skipped (a C++ state dict holds tensors only).
  explicit GoldenStateDict(const nlohmann::ordered_json& input) {
    for (const auto& t : input) {
      if (t["kind"] != "tensor") continue;
      TensorRef ref;
      ref.name = t["name"];
      ref.dtype = *dtype_from_torch_name(t["dtype"]);
      ref.shape = t["shape"].get<std::vector<std::int64_t>>();
      ref.strides = t["stride"].get<std::vector<std::int64_t>>();
      if (t["device"] == "meta") {
        ref.device = Device{DeviceKind::meta};
      } else {
        const std::string label = t["storage"];
        const std::uint64_t storage_nbytes = t["storage_nbytes"];
        auto& buffer = storages_[label];
        if (!buffer && !t["storage_ptr_is_null"].get<bool>()) {
          buffer = std::make_shared<std::vector<unsigned char>>(storage_nbytes);
          for (std::size_t i = 0; i < storage_nbytes; ++i) (*buffer)[i] = static_cast<unsigned char>(i * 7 + storages_.size() * 31);
        }
        if (buffer) {
          ref.storage_base = buffer->data();
          ref.data = buffer->data() + t["storage_offset_bytes"].get<std::uint64_t>();
          ref.keepalive = buffer;
        }
        ref.storage_nbytes = storage_nbytes;
      }
      tensors.push_back(std::move(ref));
    }
  }
  std::vector<TensorRef> tensors;

 private:
  std::map<std::string, std::shared_ptr<std::vector<unsigned char>>> storages_;
};

}  // namespace quicksave::testing
