// load_state_dict_from_file / load_torch_model (spec §6): the reference's file selection and error
// messages; strict loading that also works for sharded checkpoints (the reference's loads each
// shard strictly and always fails there). Safetensors bytes come through the load engine
// (quicksave/loader.hpp): into the model's own parameters where they match exactly (CPU,
// contiguous, same dtype and shape), else into tensors allocated once; mmap=true keeps the
// zero-copy private mapping instead, and .bin files the pickle reader.
#include <torch/serialize.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "commit/recovery.hpp"
#include "read/locate_checkpoint.hpp"
#include "quicksave/verify.hpp"
#include "quicksave/error.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/torch.hpp"
#include "torch/pickle_reader.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;

torch::Tensor to_device(torch::Tensor t, const std::optional<torch::Device>& device) {
  if (!device || device->is_meta() || device->is_cpu()) return t;  // "meta" falls back to cpu, like the reference
  return t.to(*device);
}

// A tensor of the checkpoint's dtype and shape on the CPU, for the engine to fill.
torch::Tensor empty_like_entry(const CheckpointTensor& tensor) {
  return torch::empty(tensor.shape, torch::TensorOptions().dtype(torch_dtype_from(tensor.dtype)));
}

LoadTarget target_for(const CheckpointTensor& tensor, const torch::Tensor& memory) {
  return LoadTarget{tensor.name, memory.data_ptr(), tensor.dtype, tensor.shape, std::make_shared<torch::Tensor>(memory)};
}

// True when the engine can read straight into `destination`: host memory laid out exactly as
// the checkpoint's bytes.
bool reads_straight_into(const torch::Tensor& destination, const CheckpointTensor& tensor) {
  return destination.defined() && destination.device().is_cpu() && destination.is_contiguous() &&
         destination.scalar_type() == torch_dtype_from(tensor.dtype) && destination.sizes() == torch::IntArrayRef(tensor.shape) &&
         (destination.numel() == 0 || destination.data_ptr() != nullptr);
}

enum class KeyOrder { by_name, as_listed };

// The names of the tensors of `source` that `key_filter` keeps: sorted (safetensors' key order
// for one file), or as the source lists them (an index's order).
std::vector<std::string> names_of(const LoadSource& source, const std::function<bool(const std::string&)>& key_filter, KeyOrder order) {
  std::vector<std::string> names;
  for (const auto& tensor : source.tensors()) {
    if (!key_filter || key_filter(tensor.name)) names.push_back(tensor.name);
  }
  if (order == KeyOrder::by_name) std::sort(names.begin(), names.end());
  return names;
}

// Every tensor of `source` (those `key_filter` keeps), allocated once and filled by the engine.
StateDict read_with_engine(const LoadSource& source, const std::optional<torch::Device>& map_location, bool verify,
                           const std::function<bool(const std::string&)>& key_filter = nullptr, KeyOrder order = KeyOrder::by_name) {
  TensorLoad load = load_tensors_async(source, names_of(source, key_filter, order), StateDict(), LoadOptions{.verify = verify});
  load.handle.wait();
  if (map_location && !map_location->is_cpu() && !map_location->is_meta()) {
    for (auto& item : load.tensors) item.value() = to_device(item.value(), map_location);
  }
  return std::move(load.tensors);
}

StateDict load_safetensors(const fs::path& path, const std::optional<torch::Device>& map_location, bool mmap) {
  if (!mmap) return read_with_engine(LoadSource::open(path), map_location, /*verify=*/false);
  const SafetensorsFile file = SafetensorsFile::open(path, mmap);
  if (const auto& metadata = file.header().metadata) {
    const auto format = std::find_if(metadata->begin(), metadata->end(), [](const auto& kv) { return kv.first == "format"; });
    if (format == metadata->end() || (format->second != "pt" && format->second != "mlx")) {
      throw Error(ErrorCode::corrupt, "The safetensors archive passed at " + path.string() +
                                          " does not contain the valid metadata. Make sure you save your model with the "
                                          "`save_torch_model` method.");
    }
  }
  std::vector<const TensorEntry*> entries;
  for (const auto& entry : file.header().tensors) entries.push_back(&entry);
  std::sort(entries.begin(), entries.end(), [](const auto* a, const auto* b) { return a->name < b->name; });  // safetensors' key order
  const auto keepalive = file.keepalive();
  StateDict out;
  for (const auto* entry : entries) {
    const auto bytes = file.data(*entry);
    std::vector<std::int64_t> shape(entry->shape.begin(), entry->shape.end());
    const auto options = torch::TensorOptions().dtype(torch_dtype_from(entry->dtype));
    torch::Tensor t;
    if (bytes.empty()) {
      t = torch::empty(shape, options);
    } else {
      // The mapping is private and writable (copy-on-write): in-place updates never reach the file.
      t = torch::from_blob(const_cast<std::byte*>(bytes.data()), shape, [keepalive](void*) {}, options);
    }
    out.insert(entry->name, to_device(std::move(t), map_location));
  }
  return out;
}

StateDict load_pickle(const fs::path& path, const std::optional<torch::Device>& map_location) {
  StateDict out;
  for (auto& [name, tensor] : torch_pickle::read_state_dict(path)) out.insert(name, to_device(std::move(tensor), map_location));
  return out;
}

// "Error(s) in loading state_dict for Net\nMissing key(s): "a","b"." (the reference's pre-validation).
std::string strict_keys_message(const torch::nn::Module& model, const std::vector<std::string>& missing,
                                const std::vector<std::string>& unexpected) {
  const auto quoted = [](const std::vector<std::string>& keys) {
    std::string out;
    for (std::size_t i = 0; i < keys.size(); ++i) out += (i ? ",\"" : "\"") + keys[i] + "\"";
    return out;
  };
  std::string message = "Error(s) in loading state_dict for " + model.name();
  if (!missing.empty()) message += "\nMissing key(s): " + quoted(missing) + ".";
  if (!unexpected.empty()) message += "\nUnexpected key(s): " + quoted(unexpected) + ".";
  return message;
}

std::string size_repr(torch::IntArrayRef sizes) {
  std::string out = "torch.Size([";
  for (std::size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "])";
}

// torch.nn.Module.load_state_dict for a C++ module: copies values into parameters and buffers.
IncompatibleKeys load_into_module(torch::nn::Module& model, const StateDict& state_dict, bool strict,
                                  const std::function<bool(const std::string&)>& key_filter) {
  StateDict target = module_state_dict(model);
  IncompatibleKeys keys;
  std::vector<std::string> errors;
  torch::NoGradGuard no_grad;
  for (const auto& item : state_dict) {
    if (key_filter && !key_filter(item.key())) continue;
    torch::Tensor* destination = target.find(item.key());
    if (destination == nullptr) {
      keys.unexpected_keys.push_back(item.key());
      continue;
    }
    if (destination->sizes() != item.value().sizes()) {
      errors.push_back("size mismatch for " + item.key() + ": copying a param with shape " + size_repr(item.value().sizes()) +
                       " from checkpoint, the shape in current model is " + size_repr(destination->sizes()) + ".");
      continue;
    }
    destination->copy_(item.value());
  }
  for (const auto& item : target) {
    if (key_filter && !key_filter(item.key())) continue;
    if (!state_dict.contains(item.key())) keys.missing_keys.push_back(item.key());
  }
  if (strict) {
    std::string unexpected, missing;
    for (const auto& k : keys.unexpected_keys) unexpected += (unexpected.empty() ? "\"" : ", \"") + k + "\"";
    for (const auto& k : keys.missing_keys) missing += (missing.empty() ? "\"" : ", \"") + k + "\"";
    if (!keys.unexpected_keys.empty()) errors.insert(errors.begin(), "Unexpected key(s) in state_dict: " + unexpected + ". ");
    if (!keys.missing_keys.empty()) errors.insert(errors.begin(), "Missing key(s) in state_dict: " + missing + ". ");
  }
  if (!errors.empty()) {
    std::string message = "Error(s) in loading state_dict for " + model.name() + ":";
    for (const auto& e : errors) message += "\n\t" + e;
    throw Error(ErrorCode::invalid_argument, message);
  }
  return keys;
}

// The distinct shard files of an index, validated, in first-appearance order; only those holding
// keys that pass the filter.
std::vector<std::string> shards_to_read(const ShardIndex& index, const std::string& pattern, const fs::path& index_path,
                                        const std::function<bool(const std::string&)>& key_filter) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const auto& [name, file] : index.weight_map) {
    if (seen.insert(file).second) validate_shard_filename(file, pattern, index_path.string());
  }
  seen.clear();
  for (const auto& [name, file] : index.weight_map) {
    if (key_filter && !key_filter(name)) continue;
    if (seen.insert(file).second) files.push_back(file);
  }
  return files;
}

void require_exists(const fs::path& path) {
  if (!fs::exists(path)) throw Error(ErrorCode::not_found, "Checkpoint path " + path.string() + " does not exist");
}

// Loads never write: a folder that an interrupted save left leftovers in is read as the complete
// checkpoint its journal describes, and left as it is (recovery is for writers).
commit::CheckpointView view_of(const fs::path& dir) {
  auto fs = commit::make_posix_file_system();
  return commit::read_view(*fs, dir);
}

// LoadModelOptions::verify: the folder's checksum manifest must be there and every byte match.
void verify_if_asked(const fs::path& dir, const std::string& pattern, const LoadModelOptions& options) {
  if (!options.verify) return;
  const ChecksumReport report = verify_checksums(dir, pattern);
  if (!report.manifest_found) {
    throw Error(ErrorCode::not_found, "verify: " + dir.string() + " has no checksum manifest (" + report.manifest + ")");
  }
  if (!report.ok()) {
    const std::size_t more = report.mismatches.size() - 1;
    throw Error(ErrorCode::corrupt, "verify: " + report.mismatches.front().what +
                                        (more ? " (and " + std::to_string(more) + " more mismatches)" : ""));
  }
}

// The checkpoint the engine reads, when it is safetensors and not to be mapped (nullopt: the
// mapping or the pickle reader reads it). `sharded` says whether an index lists it.
struct EngineCheckpoint {
  LoadSource source;
  bool sharded = false;
};
std::optional<EngineCheckpoint> engine_checkpoint(const fs::path& path, const LoadModelOptions& options) {
  if (options.mmap) return std::nullopt;
  if (!fs::is_directory(path)) {
    if (path.extension() != ".safetensors" || !fs::is_regular_file(path)) return std::nullopt;
    return EngineCheckpoint{LoadSource::open(path, LoadSourceOptions{.verify = options.verify, .key_filter = options.key_filter}), false};
  }
  const CheckpointFiles found = read::locate_checkpoint(view_of(path), options.safe, options.filename_pattern);
  const fs::path example = found.single ? *found.single : fs::path(found.pattern);
  if (example.extension() != ".safetensors") return std::nullopt;
  return EngineCheckpoint{LoadSource::open(path, LoadSourceOptions{.filename_pattern = found.pattern,
                                                                   .verify = options.verify,
                                                                   .key_filter = options.key_filter}),
                          found.index.has_value()};
}

// load_torch_model through the engine: each matching parameter or buffer is read straight into
// (CPU, contiguous, same dtype and shape), the others into a tensor of the checkpoint's dtype and
// shape that load_into_module then copies (casting, to the device) with the reference's checks
// and messages. A key the model lacks is never read: it is only reported.
IncompatibleKeys load_model_with_engine(torch::nn::Module& model, const EngineCheckpoint& checkpoint, const LoadModelOptions& options) {
  StateDict model_state = module_state_dict(model);
  IncompatibleKeys keys;
  if (checkpoint.sharded) {
    // The reference's pre-validation of a sharded load, before anything is read.
    std::set<std::string> index_keys, model_keys;
    for (const auto& name : names_of(checkpoint.source, options.key_filter, KeyOrder::by_name)) index_keys.insert(name);
    for (const auto& item : model_state) {
      if (!options.key_filter || options.key_filter(item.key())) model_keys.insert(item.key());
    }
    std::set_difference(model_keys.begin(), model_keys.end(), index_keys.begin(), index_keys.end(), std::back_inserter(keys.missing_keys));
    std::set_difference(index_keys.begin(), index_keys.end(), model_keys.begin(), model_keys.end(),
                        std::back_inserter(keys.unexpected_keys));
    if (options.strict && !keys.all_matched()) {
      throw Error(ErrorCode::invalid_argument, strict_keys_message(model, keys.missing_keys, keys.unexpected_keys));
    }
  }
  // What load_into_module copies from: a straight read's entry is the parameter itself (copy_
  // skips it); a key the model lacks only needs its name.
  std::vector<std::string> to_read;
  for (const auto& name : names_of(checkpoint.source, options.key_filter, KeyOrder::by_name)) {
    if (model_state.contains(name)) to_read.push_back(name);
  }
  TensorLoad load = load_tensors_async(checkpoint.source, to_read, model_state, LoadOptions{.verify = options.verify});
  load.handle.wait();
  StateDict feed;
  for (const auto& name : names_of(checkpoint.source, options.key_filter, KeyOrder::by_name)) {
    const torch::Tensor* read = load.tensors.find(name);
    feed.insert(name, read != nullptr ? *read : torch::Tensor());
  }
  if (!checkpoint.sharded) return load_into_module(model, feed, options.strict, options.key_filter);
  load_into_module(model, feed, /*strict=*/false, options.key_filter);
  return keys;
}

}  // namespace

TensorLoad load_tensors_async(const LoadSource& source, const std::vector<std::string>& names, const StateDict& into,
                              const LoadOptions& options, Loader* loader) {
  TensorLoad out;
  std::vector<LoadTarget> targets;
  for (const auto& name : names) {
    const CheckpointTensor* tensor = source.find(name);
    if (tensor == nullptr) throw Error(ErrorCode::not_found, "load: the checkpoint has no tensor " + name);
    const torch::Tensor* own = into.find(name);
    torch::Tensor memory = own != nullptr && reads_straight_into(*own, *tensor) ? *own : empty_like_entry(*tensor);
    if (tensor->nbytes > 0) targets.push_back(target_for(*tensor, memory));
    out.tensors.insert(name, std::move(memory));
  }
  out.handle = (loader != nullptr ? *loader : Loader::shared()).load_async(source, std::move(targets), options);
  return out;
}

StateDict load_state_dict_from_file(const fs::path& checkpoint_file, std::optional<torch::Device> map_location, bool mmap) {
  if (!fs::is_regular_file(checkpoint_file)) {
    throw Error(ErrorCode::not_found, "No checkpoint file found at '" + checkpoint_file.string() +
                                          "'. Please verify the path is correct and the file has been properly downloaded.");
  }
  if (checkpoint_file.extension() == ".safetensors") return load_safetensors(checkpoint_file, map_location, mmap);
  return load_pickle(checkpoint_file, map_location);
}

IncompatibleKeys load_torch_model(torch::nn::Module& model, const fs::path& checkpoint_path, const LoadModelOptions& options) {
  require_exists(checkpoint_path);
  if (auto checkpoint = engine_checkpoint(checkpoint_path, options)) return load_model_with_engine(model, *checkpoint, options);
  if (!fs::is_directory(checkpoint_path)) {
    if (options.verify) verify_if_asked(checkpoint_path.parent_path(), std::string(kSafetensorsPattern), options);
    return load_into_module(model, load_state_dict_from_file(checkpoint_path, options.map_location, options.mmap),
                            options.strict, options.key_filter);
  }
  const commit::CheckpointView view = view_of(checkpoint_path);
  const CheckpointFiles found = read::locate_checkpoint(view, options.safe, options.filename_pattern);
  verify_if_asked(checkpoint_path, found.pattern, options);
  if (found.single) {
    return load_into_module(model, load_state_dict_from_file(*found.single, options.map_location, options.mmap),
                            options.strict, options.key_filter);
  }
  const ShardIndex index = read_index_file(*found.index);
  const auto files = shards_to_read(index, found.pattern, *found.index, options.key_filter);
  std::set<std::string> index_keys, model_keys;
  for (const auto& [name, file] : index.weight_map) {
    if (!options.key_filter || options.key_filter(name)) index_keys.insert(name);
  }
  for (const auto& item : module_state_dict(model)) {
    if (!options.key_filter || options.key_filter(item.key())) model_keys.insert(item.key());
  }
  IncompatibleKeys keys;
  std::set_difference(model_keys.begin(), model_keys.end(), index_keys.begin(), index_keys.end(), std::back_inserter(keys.missing_keys));
  std::set_difference(index_keys.begin(), index_keys.end(), model_keys.begin(), model_keys.end(),
                      std::back_inserter(keys.unexpected_keys));
  if (options.strict && !keys.all_matched()) {
    throw Error(ErrorCode::invalid_argument, strict_keys_message(model, keys.missing_keys, keys.unexpected_keys));
  }
  std::map<std::string, std::vector<std::string>> names_in;  // shard → the (filtered) names the index puts there
  for (const auto& [name, file] : index.weight_map) {
    if (!options.key_filter || options.key_filter(name)) names_in[file].push_back(name);
  }
  for (const auto& file : files) {
    const StateDict shard = load_state_dict_from_file(view.path_of(file), options.map_location, options.mmap);
    // Every index entry must be in its shard, strict or not: otherwise that parameter would
    // silently keep its old values while the load reports success.
    for (const auto& name : names_in[file]) {
      if (!shard.contains(name)) throw Error(ErrorCode::corrupt, "the index maps " + name + " to " + file + ", which does not hold it");
    }
    // Each shard holds part of the keys: load it non-strictly; the whole was checked above.
    load_into_module(model, shard, /*strict=*/false, options.key_filter);
  }
  return keys;
}

StateDict load_checkpoint(const fs::path& checkpoint_path, const LoadModelOptions& options) {
  require_exists(checkpoint_path);
  if (auto checkpoint = engine_checkpoint(checkpoint_path, options)) {
    return read_with_engine(checkpoint->source, options.map_location, options.verify, options.key_filter,
                            checkpoint->sharded ? KeyOrder::as_listed : KeyOrder::by_name);
  }
  if (!fs::is_directory(checkpoint_path)) {
    if (options.verify) verify_if_asked(checkpoint_path.parent_path(), std::string(kSafetensorsPattern), options);
    return load_state_dict_from_file(checkpoint_path, options.map_location, options.mmap);
  }
  const commit::CheckpointView view = view_of(checkpoint_path);
  const CheckpointFiles found = read::locate_checkpoint(view, options.safe, options.filename_pattern);
  verify_if_asked(checkpoint_path, found.pattern, options);
  if (found.single) return load_state_dict_from_file(*found.single, options.map_location, options.mmap);
  const ShardIndex index = read_index_file(*found.index);
  StateDict merged;
  std::map<std::string, StateDict> shards;
  for (const auto& file : shards_to_read(index, found.pattern, *found.index, options.key_filter)) {
    shards.emplace(file, load_state_dict_from_file(view.path_of(file), options.map_location, options.mmap));
  }
  for (const auto& [name, file] : index.weight_map) {
    if (options.key_filter && !options.key_filter(name)) continue;
    const torch::Tensor* t = shards.at(file).find(name);
    if (t == nullptr) throw Error(ErrorCode::corrupt, "the index maps " + name + " to " + file + ", which does not hold it");
    merged.insert(name, *t);
  }
  return merged;
}

}  // namespace quicksave
