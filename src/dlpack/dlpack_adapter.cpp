// The DLPack adapter: DLPack → TensorRef, and the TensorFlow-style splitter (huggingface_hub v0.36.2 _tensorflow.py).
#include "format/text.hpp"
#include "quicksave/dlpack.hpp"
#include "quicksave/error.hpp"

namespace quicksave {
namespace {

std::uint64_t dlpack_numel(const DLTensor& t) {
  std::uint64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) throw Error(ErrorCode::invalid_argument, "DLPack tensor with a negative dimension");
    n *= static_cast<std::uint64_t>(t.shape[i]);
  }
  return n;
}

Error unsupported(DLDataType type) {
  return Error(ErrorCode::invalid_argument, "DLPack type (code " + std::to_string(type.code) + ", " + std::to_string(type.bits) +
                                                " bits, " + std::to_string(type.lanes) + " lanes) has no safetensors equivalent");
}

}  // namespace

DType dtype_from_dlpack(DLDataType type) {
  if (type.lanes != 1) throw unsupported(type);
  switch (type.code) {
    case kDLInt:
      if (type.bits == 8) return DType::I8;
      if (type.bits == 16) return DType::I16;
      if (type.bits == 32) return DType::I32;
      if (type.bits == 64) return DType::I64;
      break;
    case kDLUInt:
      if (type.bits == 8) return DType::U8;
      if (type.bits == 16) return DType::U16;
      if (type.bits == 32) return DType::U32;
      if (type.bits == 64) return DType::U64;
      break;
    case kDLFloat:
      if (type.bits == 16) return DType::F16;
      if (type.bits == 32) return DType::F32;
      if (type.bits == 64) return DType::F64;
      break;
    case kDLBfloat:
      if (type.bits == 16) return DType::BF16;
      break;
    case kDLComplex:
      if (type.bits == 64) return DType::C64;
      break;
    case kDLPackBoolCode:
      if (type.bits == 8) return DType::BOOL;
      break;
    default: break;
  }
  throw unsupported(type);
}

TensorRef tensor_ref_from_dlpack(std::string name, const DLTensor& tensor, std::shared_ptr<const void> keepalive) {
  TensorRef ref;
  ref.name = std::move(name);
  ref.dtype = dtype_from_dlpack(tensor.dtype);
  switch (tensor.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost: ref.device = Device{DeviceKind::cpu, -1}; break;
    case kDLCUDA: ref.device = Device{DeviceKind::cuda, tensor.device.device_id}; break;
    default:
      throw Error(ErrorCode::invalid_argument, "DLPack tensor " + format::python_repr(ref.name) + " is on device type " +
                                                   std::to_string(tensor.device.device_type) + " (cpu and cuda are supported)");
  }
  ref.shape.assign(tensor.shape, tensor.shape + tensor.ndim);
  if (tensor.strides != nullptr) ref.strides.assign(tensor.strides, tensor.strides + tensor.ndim);
  ref.data = tensor.data == nullptr ? nullptr : static_cast<const std::byte*>(tensor.data) + tensor.byte_offset;
  // DLPack has no storage: the tensor's own extent (first to last element it reaches) is its storage.
  ref.storage_base = ref.data;
  ref.storage_nbytes = ref.nbytes();
  if (!ref.strides.empty() && ref.numel() > 0) {
    std::uint64_t last = 0;
    for (std::size_t d = 0; d < ref.shape.size(); ++d) {
      if (ref.strides[d] < 0) throw Error(ErrorCode::invalid_argument, "DLPack tensor " + format::python_repr(ref.name) + " has a negative stride");
      last += static_cast<std::uint64_t>(ref.shape[d] - 1) * static_cast<std::uint64_t>(ref.strides[d]);
    }
    ref.storage_nbytes = (last + 1) * static_cast<std::uint64_t>(tensor.dtype.bits / 8);
  }
  ref.keepalive = std::move(keepalive);
  return ref;
}

namespace {

StateDictSplit split_dlpack(const DLPackStateDict& state_dict, std::string_view pattern, const ShardSize& max_shard_size,
                            bool tensorflow_sizes) {
  std::vector<SplitItem> items;
  items.reserve(state_dict.size());
  for (const auto& [name, tensor] : state_dict) {
    if (tensor == nullptr) throw Error(ErrorCode::invalid_argument, "DLPack tensor " + format::python_repr(name) + " is null");
    // TensorFlow sizes need no safetensors dtype (the reference sizes complex128 too).
    const bool is_bool = tensor->dtype.code == kDLPackBoolCode;
    if (!tensorflow_sizes) dtype_from_dlpack(tensor->dtype);
    if (tensor->dtype.lanes != 1) throw unsupported(tensor->dtype);
    const std::uint64_t numel = dlpack_numel(*tensor);
    SplitItem item{.name = name};
    if (tensorflow_sizes && is_bool) {
      item.storage_size = static_cast<std::int64_t>((numel + 7) / 8);  // math.ceil(numel * 1/8)
    } else {
      item.storage_size = static_cast<std::int64_t>(numel * static_cast<std::uint64_t>(tensor->dtype.bits / 8));
    }
    items.push_back(std::move(item));  // no storage id: never grouped
  }
  return split_state_dict_into_shards_factory(items, pattern, max_shard_size);
}

}  // namespace

StateDictSplit split_tf_state_dict_into_shards(const DLPackStateDict& state_dict, std::string_view filename_pattern,
                                               const ShardSize& max_shard_size) {
  return split_dlpack(state_dict, filename_pattern, max_shard_size, /*tensorflow_sizes=*/true);
}

StateDictSplit split_dlpack_state_dict_into_shards(const DLPackStateDict& state_dict, std::string_view filename_pattern,
                                                   const ShardSize& max_shard_size) {
  return split_dlpack(state_dict, filename_pattern, max_shard_size, /*tensorflow_sizes=*/false);
}

}  // namespace quicksave
