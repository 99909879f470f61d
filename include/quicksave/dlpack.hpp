// The DLPack adapter: tensors from any framework that exports DLPack (TensorFlow, JAX, CuPy,
// NumPy, PyTorch) as TensorRefs, and the shard planners over them. This header includes
// <dlpack/dlpack.h> (Debian's libdlpack-dev); the rest of the core API does not.
#pragma once

#include <dlpack/dlpack.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "quicksave/split.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave {

// DLPack >= 0.8 marks booleans with this type code (dlpack.h 0.6 predates it). Exporters that
// follow older DLPack mark booleans as 8-bit unsigned integers; those count as U8.
inline constexpr std::uint8_t kDLPackBoolCode = 6;

using DLPackStateDict = std::vector<std::pair<std::string, const DLTensor*>>;

// The safetensors dtype of a DLPack type; throws invalid_argument for vector lanes or types
// safetensors lacks.
DType dtype_from_dlpack(DLDataType type);

// A view of a DLPack tensor (host, pinned host or CUDA memory). DLPack has no storage: the
// tensor's own bytes count as its storage. `keepalive` should own the exporter's capsule.
TensorRef tensor_ref_from_dlpack(std::string name, const DLTensor& tensor, std::shared_ptr<const void> keepalive = {});

// huggingface_hub <= 0.36's split_tf_state_dict_into_shards: no storage sharing; size =
// ceil(numel × bytes per element) with booleans counted as 1/8 byte, as the reference does.
StateDictSplit split_tf_state_dict_into_shards(const DLPackStateDict& state_dict,
                                               std::string_view filename_pattern = kTensorflowPattern,
                                               const ShardSize& max_shard_size = ShardSize("5GB"));

// The same planner with real byte sizes (a boolean is one byte), for safetensors output.
StateDictSplit split_dlpack_state_dict_into_shards(const DLPackStateDict& state_dict,
                                                   std::string_view filename_pattern = kSafetensorsPattern,
                                                   const ShardSize& max_shard_size = ShardSize("5GB"));

}  // namespace quicksave
