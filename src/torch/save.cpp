// save_torch_state_dict / save_torch_model (spec §4-5): the safetensors path goes through the
// framework-agnostic plan and the synchronous writer; the pickle path writes torch.save-compatible
// zip archives with LibTorch's pickler, through the same commit protocol.
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

#include <future>

#include "commit/commit.hpp"
#include "engine/sync_writer.hpp"
#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "quicksave/torch.hpp"

namespace quicksave {
namespace {

// A host copy of a device tensor, for the synchronous writer (one tensor at a time).
TensorRef fetch_to_host(const TensorRef& device_ref) {
  const auto& tensor = *std::static_pointer_cast<const torch::Tensor>(device_ref.keepalive);
  return to_tensor_ref(device_ref.name, tensor.to(torch::kCPU).contiguous());
}

SaveResult save_safetensors(const StateDict& state_dict, const std::filesystem::path& dir, const TorchSaveOptions& options) {
  const SaveOptions& save_options = options;
  const plan::SavePlan plan = plan::make_save_plan(to_tensor_refs(state_dict), save_options);
  auto io = io::make_posix_backend(1);
  auto fs = commit::make_posix_file_system();
  return engine::write_plan_sync(plan, dir, save_options, *io, *fs, fetch_to_host);
}

// Writes `dict` as the zip archive Python's torch.save writes, streamed into `path` through the
// backend (no whole-file buffer), then fsyncs it. Unlike torch::pickle_save, dicts are not tagged
// with TorchScript types, so Python's torch.load(weights_only=True) accepts the file.
std::uint64_t write_pickle_archive(const c10::Dict<std::string, torch::Tensor>& dict, const std::filesystem::path& path,
                                   io::IoBackend& io) {
  std::vector<char> pickle_bytes;
  // No tensor table: tensors are pickled as storages plus _rebuild_tensor_v2, as Python does.
  torch::jit::Pickler pickler([&](const char* data, std::size_t n) { pickle_bytes.insert(pickle_bytes.end(), data, data + n); },
                              nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();

  io::ScopedFile file = io.create_scoped(path, io::OpenOptions{});
  std::uint64_t offset = 0;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, std::size_t n) -> std::size_t {
    io::write_blocking(io, file.get(), offset, static_cast<const std::byte*>(data), n);
    offset += n;
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", pickle_bytes.data(), pickle_bytes.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  io.sync(file.get());
  file.close();
  return offset;
}

// The pickle path, like the reference: no de-duplication and no .contiguous(); torch.save keeps
// views and shared storages as they are.
SaveResult save_pickle(const StateDict& state_dict, const std::filesystem::path& dir, const TorchSaveOptions& options) {
  const std::string pattern = options.filename_pattern.value_or(std::string(kPytorchPattern));
  const StateDictSplit split = split_torch_state_dict_into_shards(state_dict, pattern, options.max_shard_size);
  std::vector<std::string> outputs;
  for (const auto& [file, names] : split.filename_to_tensors) outputs.push_back(file);
  std::optional<ShardIndex> index;
  if (split.is_sharded) {
    index.emplace();
    index->metadata = split.metadata;
    for (const auto& [key, value] : options.metadata) index->metadata.set(key, value);
    index->weight_map = split.tensor_to_filename;
    outputs.push_back(index_filename(pattern));
  }
  auto io = io::make_posix_backend(1);
  auto fs = commit::make_posix_file_system();
  commit::Commit transaction = commit::Commit::begin(*fs, dir,
                                                commit::BeginOptions{.pattern = pattern,
                                                                     .outputs = outputs,
                                                                     .is_main_process = options.is_main_process,
                                                                     .wait_for_lock = options.wait_for_lock});
  SaveResult result;
  result.backend = io->name();
  for (const auto& [file, names] : split.filename_to_tensors) {
    c10::Dict<std::string, torch::Tensor> dict;
    for (const auto& name : names) dict.insert(name, state_dict[name]);
    result.bytes_written += write_pickle_archive(dict, transaction.staging_path(file), *io);
    result.files.push_back(file);
  }
  std::vector<std::pair<std::string, std::string>> small_files;
  if (index) {
    const std::string text = index_to_json(*index);
    small_files.emplace_back(outputs.back(), text);
    result.files.push_back(outputs.back());
    result.bytes_written += text.size();
  }
  const commit::CommitResult committed = transaction.publish(small_files);
  result.commit_mode = committed.mode;
  result.removed_stale = committed.removed;
  transaction.release_previous();
  return result;
}

}  // namespace

SaveResult save_torch_state_dict(const StateDict& state_dict, const std::filesystem::path& save_directory,
                                 const TorchSaveOptions& options) {
  return options.safe_serialization ? save_safetensors(state_dict, save_directory, options)
                                    : save_pickle(state_dict, save_directory, options);
}

SaveResult save_torch_model(const torch::nn::Module& model, const std::filesystem::path& save_directory,
                            const TorchSaveOptions& options) {
  return save_torch_state_dict(module_state_dict(model), save_directory, options);
}

}  // namespace quicksave
