// The Hugging Face-compatible API over LibTorch tensors (huggingface_hub.serialization, spec
// §3-6), with the same names and semantics, and the LibTorch adapter for the engine.
//
// Where the reference silently loses data or crashes, quicksave does the safe thing instead:
//   - two names are de-duplicated only when they are the same view; other views of a storage
//     (a slice of a kept tensor, a transpose, a lone partial slice) are saved with their own bytes;
//   - every dtype safetensors knows is accepted (the reference raises KeyError for complex64, ...);
//   - a filename pattern without {suffix} that needs several shards is refused;
//   - stale-file clean-up removes only this pattern's exact shard and index names, and only after
//     the new files are durable; the save directory is created when missing;
//   - the caller's state dict and metadata are never modified;
//   - load_torch_model(strict=true) works on sharded checkpoints.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quicksave/checkpointer.hpp"
#include "quicksave/index.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/save.hpp"
#include "quicksave/split.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave {

// An ordered state dict, as `module.state_dict()` gives it in Python.
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

// ---- storage identity and size (spec §3) ---------------------------------------------------
struct TorchStorageId {
  torch::Device device{torch::kCPU};
  std::uintptr_t storage_ptr = 0;
  std::int64_t storage_nbytes = 0;
  friend bool operator==(const TorchStorageId&, const TorchStorageId&) = default;
};

// (device, storage pointer, storage bytes); nullopt for meta tensors (never grouped).
std::optional<TorchStorageId> get_torch_storage_id(const torch::Tensor& tensor);
// Bytes of the whole underlying storage: a slice counts its full storage, an expanded (stride-0)
// view only the real bytes, a 0-d tensor its itemsize, a fresh empty tensor 0.
std::int64_t get_torch_storage_size(const torch::Tensor& tensor);

// The safetensors dtype of a torch dtype; throws invalid_argument for dtypes safetensors lacks.
DType dtype_from_torch(torch::ScalarType type);
torch::ScalarType torch_dtype_from(DType dtype);

// The framework-agnostic view of a tensor (it keeps the tensor alive).
TensorRef to_tensor_ref(const std::string& name, const torch::Tensor& tensor);
std::vector<TensorRef> to_tensor_refs(const StateDict& state_dict);

// Lets Checkpointer::save_async take a StateDict directly.
template <>
struct TensorRefSource<StateDict> {
  static std::vector<TensorRef> tensor_refs(const StateDict& state_dict) { return to_tensor_refs(state_dict); }
};

// parameters then buffers of each module, children after their parent (Python's state_dict order).
StateDict module_state_dict(const torch::nn::Module& module);

// ---- splitting ------------------------------------------------------------------------------
StateDictSplit split_torch_state_dict_into_shards(const StateDict& state_dict,
                                                  std::string_view filename_pattern = kSafetensorsPattern,
                                                  const ShardSize& max_shard_size = ShardSize("5GB"));

// ---- saving (spec §4-5) ---------------------------------------------------------------------
// SaveOptions (quicksave/save_options.hpp) plus the choice of format. The default pattern
// follows it: model{suffix}.safetensors, or pytorch_model{suffix}.bin for pickle files.
// checksums apply to safetensors saves; producer_streams are not used (devices are read
// synchronously, one tensor at a time).
struct TorchSaveOptions : SaveOptions {
  bool safe_serialization = true;  // false: pickle (.bin) files that Python's torch.load opens
};

SaveResult save_torch_state_dict(const StateDict& state_dict, const std::filesystem::path& save_directory,
                                 const TorchSaveOptions& options = {});
SaveResult save_torch_model(const torch::nn::Module& model, const std::filesystem::path& save_directory,
                            const TorchSaveOptions& options = {});

// ---- loading (spec §6) ----------------------------------------------------------------------
// A safetensors file (zero-copy mmap unless `mmap` is false) or a pickle .bin file written by
// torch.save. Tensors go to `map_location` when given ("meta" falls back to cpu).
StateDict load_state_dict_from_file(const std::filesystem::path& checkpoint_file,
                                    std::optional<torch::Device> map_location = std::nullopt, bool mmap = true);

struct IncompatibleKeys {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  bool all_matched() const { return missing_keys.empty() && unexpected_keys.empty(); }
};

struct LoadModelOptions {
  bool strict = false;
  bool safe = true;
  bool mmap = false;
  std::optional<torch::Device> map_location;
  std::optional<std::string> filename_pattern;
  // When set, only keys for which it returns true are loaded (and only the shards holding them
  // are opened); the others count neither as missing nor as unexpected.
  std::function<bool(const std::string&)> key_filter;
  // Check every tensor's bytes against the folder's checksum manifest before loading; a
  // mismatch (or no manifest) fails the load with an error naming the file, tensor and bytes.
  bool verify = false;
};

// Loads a file, or a directory (index or single file, the reference's selection rules), into
// `model`'s parameters and buffers (copying into them, casting as torch does).
IncompatibleKeys load_torch_model(torch::nn::Module& model, const std::filesystem::path& checkpoint_path,
                                  const LoadModelOptions& options = {});

// ---- the load engine over LibTorch tensors (quicksave/loader.hpp) ----------------------------
// Safetensors loads without mmap go through the engine: straight into a model's parameters and
// buffers where they match the checkpoint exactly (CPU, contiguous, same dtype and shape), else
// into tensors allocated once and filled by reads; verify hashes each range as it arrives.
struct TensorLoad {
  LoadHandle handle;  // wait() before reading `tensors`
  StateDict tensors;  // in `names` order: into's own tensor where it matches exactly, else a new CPU tensor
};
// Starts reading the tensors `names` of `source` (each must be in it). `loader` null: Loader::shared().
TensorLoad load_tensors_async(const LoadSource& source, const std::vector<std::string>& names, const StateDict& into = StateDict(),
                              const LoadOptions& options = {}, Loader* loader = nullptr);

// Loads a whole checkpoint (file or directory) as a state dict, without a model.
StateDict load_checkpoint(const std::filesystem::path& checkpoint_path, const LoadModelOptions& options = {});

}  // namespace quicksave
