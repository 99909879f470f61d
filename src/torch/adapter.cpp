// LibTorch → quicksave: dtypes, storage identity and size (spec §3), TensorRef views, the
// Python-ordered state dict of a module, and split_torch_state_dict_into_shards.
#include <torch/version.h>
#if defined(QUICKSAVE_TORCH_CUDA) && QUICKSAVE_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/torch.hpp"

namespace quicksave {

DType dtype_from_torch(torch::ScalarType type) {
  switch (type) {
    case torch::kBool: return DType::BOOL;
    case torch::kByte: return DType::U8;
    case torch::kChar: return DType::I8;
    case torch::kShort: return DType::I16;
    case torch::kInt: return DType::I32;
    case torch::kLong: return DType::I64;
    case torch::kHalf: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kFloat: return DType::F32;
    case torch::kDouble: return DType::F64;
    case torch::kComplexFloat: return DType::C64;
#if TORCH_VERSION_MAJOR >= 2
    case torch::kFloat8_e4m3fn: return DType::F8_E4M3;
    case torch::kFloat8_e5m2: return DType::F8_E5M2;
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
    case torch::kUInt16: return DType::U16;
    case torch::kUInt32: return DType::U32;
    case torch::kUInt64: return DType::U64;
    case torch::kFloat8_e4m3fnuz: return DType::F8_E4M3FNUZ;
    case torch::kFloat8_e5m2fnuz: return DType::F8_E5M2FNUZ;
#endif
    default:
      throw Error(ErrorCode::invalid_argument,
                  std::string("dtype ") + c10::toString(type) + " has no safetensors equivalent");
  }
}

torch::ScalarType torch_dtype_from(DType dtype) {
  switch (dtype) {
    case DType::BOOL: return torch::kBool;
    case DType::U8: return torch::kByte;
    case DType::I8: return torch::kChar;
    case DType::I16: return torch::kShort;
    case DType::I32: return torch::kInt;
    case DType::I64: return torch::kLong;
    case DType::F16: return torch::kHalf;
    case DType::BF16: return torch::kBFloat16;
    case DType::F32: return torch::kFloat;
    case DType::F64: return torch::kDouble;
    case DType::C64: return torch::kComplexFloat;
#if TORCH_VERSION_MAJOR >= 2
    case DType::F8_E4M3: return torch::kFloat8_e4m3fn;
    case DType::F8_E5M2: return torch::kFloat8_e5m2;
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
    case DType::U16: return torch::kUInt16;
    case DType::U32: return torch::kUInt32;
    case DType::U64: return torch::kUInt64;
    case DType::F8_E4M3FNUZ: return torch::kFloat8_e4m3fnuz;
    case DType::F8_E5M2FNUZ: return torch::kFloat8_e5m2fnuz;
#endif
    default:
      throw Error(ErrorCode::invalid_argument, "this LibTorch (" TORCH_VERSION ") has no dtype for safetensors " +
                                                   std::string(dtype_name(dtype)));
  }
}

namespace {

Device quicksave_device_of(const torch::Tensor& t) {
  const auto d = t.device();
  if (d.is_cpu()) return Device{DeviceKind::cpu, -1};
  if (d.is_cuda()) return Device{DeviceKind::cuda, d.has_index() ? d.index() : 0};
  if (d.is_meta()) return Device{DeviceKind::meta, -1};
  throw Error(ErrorCode::invalid_argument, "tensors on " + d.str() + " are not supported (cpu, cuda and meta are)");
}

std::int64_t meta_nbytes(const torch::Tensor& t) {
  return static_cast<std::int64_t>(t.numel()) * static_cast<std::int64_t>(t.element_size());
}

}  // namespace

std::int64_t get_torch_storage_size(const torch::Tensor& tensor) {
  // The reference under torch < 2 falls back to numel × itemsize for meta tensors.
  if (tensor.is_meta() || !tensor.has_storage()) return meta_nbytes(tensor);
  return static_cast<std::int64_t>(tensor.storage().nbytes());
}

std::optional<TorchStorageId> get_torch_storage_id(const torch::Tensor& tensor) {
  if (tensor.is_meta()) return std::nullopt;
  const void* ptr = tensor.has_storage() ? tensor.storage().data() : nullptr;
  return TorchStorageId{tensor.device(), reinterpret_cast<std::uintptr_t>(ptr), get_torch_storage_size(tensor)};
}

TensorRef to_tensor_ref(const std::string& name, const torch::Tensor& tensor) {
  if (!tensor.defined()) throw Error(ErrorCode::invalid_argument, "tensor " + format::python_repr(name) + " is undefined");
  // A Python tensor subclass that handles its own dispatch (DTensor, a fake or functional tensor)
  // is a wrapper: its storage holds no data, the values live elsewhere (on other ranks for a
  // DTensor). Say what to do instead of failing later on a null data pointer.
  if (tensor.key_set().has(c10::DispatchKey::Python)) {
    throw Error(ErrorCode::invalid_argument,
                "tensor " + format::python_repr(name) +
                    " is a tensor subclass with no data of its own (a DTensor, fake or functional tensor): a "
                    "single-process save needs plain tensors. For a DTensor call full_tensor() (or to_local() for this "
                    "rank's shard), or save it with quicksave's distributed checkpointer (quicksave::DistributedCheckpointer)");
  }
  if (tensor.is_sparse() || tensor.layout() != torch::kStrided) {
    throw Error(ErrorCode::invalid_argument, "tensor " + format::python_repr(name) + " is not a dense (strided) tensor");
  }
  TensorRef ref;
  ref.name = name;
  ref.dtype = dtype_from_torch(tensor.scalar_type());
  ref.device = quicksave_device_of(tensor);
  ref.shape.assign(tensor.sizes().begin(), tensor.sizes().end());
  ref.strides.assign(tensor.strides().begin(), tensor.strides().end());
  if (ref.device.kind == DeviceKind::meta) {
    ref.storage_nbytes = static_cast<std::uint64_t>(get_torch_storage_size(tensor));
  } else if (tensor.has_storage()) {
    ref.storage_base = tensor.storage().data();
    if (ref.storage_base == nullptr && tensor.numel() > 0) {
      throw Error(ErrorCode::invalid_argument,
                  "tensor " + format::python_repr(name) + " (" + std::to_string(tensor.numel()) +
                      " elements) has no data in host or device memory (its storage is empty: a tensor subclass or a "
                      "lazily materialized tensor?); pass a materialized plain tensor");
    }
    ref.storage_nbytes = tensor.storage().nbytes();
    ref.data = ref.storage_base == nullptr
                   ? nullptr
                   : static_cast<const std::byte*>(ref.storage_base) + tensor.storage_offset() * tensor.element_size();
  }
  ref.keepalive = std::make_shared<torch::Tensor>(tensor);
#if defined(QUICKSAVE_TORCH_CUDA) && QUICKSAVE_TORCH_CUDA
  // The weights are written by work queued on the caller's current stream (torch's default is
  // per thread and per device): the save copies them after that work, as of this call.
  if (ref.device.kind == DeviceKind::cuda) {
    ref.producer_stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(ref.device.index)).stream();
  }
#endif
  return ref;
}

std::vector<TensorRef> to_tensor_refs(const StateDict& state_dict) {
  std::vector<TensorRef> refs;
  refs.reserve(state_dict.size());
  for (const auto& item : state_dict) refs.push_back(to_tensor_ref(item.key(), item.value()));
  return refs;
}

namespace {

void collect_state_dict(const torch::nn::Module& module, const std::string& prefix, StateDict& out) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    if (p.value().defined()) out.insert(prefix + p.key(), p.value());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    if (b.value().defined()) out.insert(prefix + b.key(), b.value());
  }
  for (const auto& child : module.named_children()) collect_state_dict(*child.value(), prefix + child.key() + ".", out);
}

}  // namespace

StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect_state_dict(module, "", out);
  return out;
}

StateDictSplit split_torch_state_dict_into_shards(const StateDict& state_dict, std::string_view filename_pattern,
                                                  const ShardSize& max_shard_size) {
  std::vector<SplitItem> items;
  items.reserve(state_dict.size());
  for (const auto& item : state_dict) {
    // Straight from torch rather than through TensorRef, so that dtypes safetensors lacks (the
    // pickle path saves them) can be planned too.
    SplitItem split_item{.name = item.key()};
    split_item.storage_size = get_torch_storage_size(item.value());
    if (const auto id = get_torch_storage_id(item.value())) {
      split_item.storage = StorageKey{id->device.str(), id->storage_ptr, static_cast<std::uint64_t>(id->storage_nbytes)};
    }
    items.push_back(std::move(split_item));
  }
  return split_state_dict_into_shards_factory(items, filename_pattern, max_shard_size);
}

}  // namespace quicksave
