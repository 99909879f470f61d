// make_save_plan: see save_plan.hpp for the steps.
#include "plan/save_plan.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "format/text.hpp"
#include "plan/shared_tensors.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave::plan {
namespace {

Error invalid(const std::string& message) { return Error(ErrorCode::invalid_argument, message); }

void validate_inputs(const std::vector<TensorRef>& tensors, bool remote_tensors_allowed) {
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw invalid("duplicate state dict key " + format::python_repr(t.name));
    if (t.device.kind == DeviceKind::meta) {
      throw invalid("tensor " + format::python_repr(t.name) + " is on the meta device: it has no data to save");
    }
    if (!t.strides.empty() && t.strides.size() != t.shape.size()) {
      throw invalid("tensor " + format::python_repr(t.name) + " has " + std::to_string(t.strides.size()) + " strides for " +
                    std::to_string(t.shape.size()) + " dimensions");
    }
    if (t.data == nullptr && t.nbytes() > 0 && !remote_tensors_allowed) {
      throw invalid("tensor " + format::python_repr(t.name) + " has no data pointer");
    }
  }
}

// safetensors' own message for a non-contiguous tensor (st_torch.py L575-581).
void require_contiguous(const TensorRef& t) {
  if (t.is_contiguous()) return;
  throw invalid("You are trying to save a non contiguous tensor: `" + t.name +
                "` which is not allowed. It either means you are trying to save tensors which are reference of each other in "
                "which case it's recommended to save only the full tensors, and reslice at load time, or simply call "
                "`.contiguous()` on your tensor to pack it before saving.");
}

StringMap file_metadata(const Metadata& metadata, bool single_file) {
  Metadata merged{{"format", std::string("pt")}};
  if (single_file) {
    for (const auto& [key, value] : metadata) merged.set(key, value);
  }
  StringMap out;
  for (const auto& [key, value] : merged) {
    const auto* text = std::get_if<std::string>(&value);
    if (text == nullptr) {
      throw invalid("metadata value of " + format::python_repr(key) +
                    " is not a string: a safetensors header only holds string values (a sharded save puts user "
                    "metadata in the index, which accepts any JSON scalar)");
    }
    out.emplace_back(key, *text);
  }
  return out;
}

void cut_into_chunks(SavePlan& plan, std::size_t file_index) {
  const PlannedFile& file = plan.files[file_index];
  std::size_t next_tensor = 0;
  for (std::uint64_t pos = 0; pos < file.file_bytes; pos += plan.chunk_bytes) {
    Chunk chunk{.file = file_index, .file_offset = pos, .length = std::min(plan.chunk_bytes, file.file_bytes - pos)};
    const std::uint64_t end = pos + chunk.length;
    if (pos < file.header.size()) {
      const std::uint64_t n = std::min<std::uint64_t>(file.header.size(), end) - pos;
      chunk.segments.push_back(Segment{Segment::kHeader, pos, n});
    }
    while (next_tensor < file.tensors.size()) {
      const PlannedTensor& t = file.tensors[next_tensor];
      const std::uint64_t t_end = t.file_offset + t.nbytes;
      if (t.nbytes == 0 || t_end <= pos) {
        ++next_tensor;
        continue;
      }
      if (t.file_offset >= end) break;
      const std::uint64_t from = std::max(pos, t.file_offset);
      const std::uint64_t to = std::min(end, t_end);
      chunk.segments.push_back(Segment{t.source, from - t.file_offset, to - from});
      if (t_end > end) break;  // the tensor continues in the next chunk
      ++next_tensor;
    }
    plan.chunks.push_back(std::move(chunk));
  }
}

}  // namespace

std::vector<std::string> SavePlan::output_names() const {
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(f.filename);
  if (index_filename) names.push_back(*index_filename);
  return names;
}

SavePlan make_save_plan(std::vector<TensorRef> tensors, const SaveOptions& options, std::uint64_t chunk_bytes,
                        bool remote_tensors_allowed) {
  if (chunk_bytes == 0 || chunk_bytes % 4096 != 0) {
    throw invalid("chunk size must be a positive multiple of 4096 bytes, got " + std::to_string(chunk_bytes));
  }
  validate_inputs(tensors, remote_tensors_allowed);
  for (const ProducerStream& producer : options.producer_streams) {
    for (TensorRef& t : tensors) {
      if (t.device.kind == DeviceKind::cuda && t.device.index == producer.device) t.producer_stream = producer.stream;
    }
  }
  SavePlan plan;
  plan.pattern = options.pattern();
  plan.chunk_bytes = chunk_bytes;

  const DedupResult dedup = remove_duplicate_names(tensors, options.shared_tensors_to_discard);
  Metadata metadata = options.metadata;  // the caller's metadata is never modified
  add_alias_metadata(metadata, dedup.aliases);
  plan.tensors.reserve(dedup.kept.size());
  for (const std::size_t i : dedup.kept) plan.tensors.push_back(std::move(tensors[i]));
  if (!options.force_contiguous) {
    for (const auto& t : plan.tensors) require_contiguous(t);
  }

  plan.split = split_state_dict_into_shards_factory(split_items_for_saved_tensors(plan.tensors), plan.pattern,
                                                    options.max_shard_size);
  std::map<std::string_view, std::size_t> source_of;
  for (std::size_t i = 0; i < plan.tensors.size(); ++i) source_of.emplace(plan.tensors[i].name, i);

  const bool single_file = !plan.split.is_sharded;
  for (const auto& [filename, names] : plan.split.filename_to_tensors) {
    std::vector<TensorSpec> specs;
    specs.reserve(names.size());
    for (const auto& name : names) {
      const TensorRef& t = plan.tensors[source_of.at(name)];
      specs.push_back(TensorSpec{t.name, t.dtype, std::vector<std::uint64_t>(t.shape.begin(), t.shape.end())});
    }
    FileLayout layout = layout_file(specs, file_metadata(metadata, single_file));
    PlannedFile file{.filename = filename, .header = std::move(layout.header)};
    for (const auto& entry : layout.tensors) {
      file.tensors.push_back(PlannedTensor{source_of.at(entry.name), file.header.size() + entry.begin, entry.nbytes()});
    }
    file.file_bytes = file.header.size() + layout.data_bytes;
    plan.total_file_bytes += file.file_bytes;
    plan.files.push_back(std::move(file));
  }

  if (plan.split.is_sharded) {
    ShardIndex index;
    index.metadata = plan.split.metadata;
    for (const auto& [key, value] : metadata) index.metadata.set(key, value);  // user keys may override total_size
    index.weight_map = plan.split.tensor_to_filename;
    plan.index_filename = index_filename(plan.pattern);
    plan.index_json = index_to_json(index);
  }
  for (std::size_t f = 0; f < plan.files.size(); ++f) cut_into_chunks(plan, f);
  return plan;
}

}  // namespace quicksave::plan
