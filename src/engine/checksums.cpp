#include "engine/checksums.hpp"

#include <algorithm>
#include <map>
#include <memory>

#include "format/checksum.hpp"
#include "quicksave/error.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave::engine {
namespace {

format::Manifest assemble(const plan::SavePlan& plan, const std::vector<plan::Chunk>& chunks,
                          const std::vector<std::vector<std::uint64_t>>& hashes) {
  format::Manifest m;
  if (plan.index_filename) {
    m.index_file = *plan.index_filename;
    m.index_hash = format::xxh3_64(plan.index_json);
  }
  m.files.resize(plan.files.size());
  // Tensor order within a file is the file's, whatever order the chunks come in.
  std::vector<std::map<std::size_t, std::size_t>> slot(plan.files.size());  // tensor → position in the file's list
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    const plan::PlannedFile& file = plan.files[f];
    m.files[f].file = file.filename;
    m.files[f].bytes = file.file_bytes;
    m.files[f].header_hash = format::xxh3_64(file.header);
    for (const auto& t : file.tensors) {
      slot[f][t.source] = m.files[f].tensors.size();
      m.files[f].tensors.push_back(format::ManifestTensor{plan.tensors[t.source].name, {}});
    }
  }
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const plan::Chunk& chunk = chunks[c];
    std::uint64_t offset = chunk.file_offset;
    for (std::size_t s = 0; s < chunk.segments.size(); ++s) {
      const plan::Segment& segment = chunk.segments[s];
      if (segment.tensor != plan::Segment::kHeader) {
        auto& ranges = m.files[chunk.file].tensors[slot[chunk.file].at(segment.tensor)].ranges;
        ranges.push_back(format::ManifestRange{offset, offset + segment.length, hashes[c][s]});
      }
      offset += segment.length;
    }
  }
  for (auto& file : m.files) {
    for (auto& tensor : file.tensors) {
      std::sort(tensor.ranges.begin(), tensor.ranges.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
    }
  }
  return m;
}

}  // namespace

ChecksumRecorder::ChecksumRecorder(const plan::SavePlan& plan, const std::vector<plan::Chunk>& chunks)
    : plan_(plan), chunks_(chunks), hashes_(chunks.size()) {
  for (std::size_t c = 0; c < chunks.size(); ++c) hashes_[c].assign(chunks[c].segments.size(), 0);
}

void ChecksumRecorder::record(std::size_t chunk_index, const std::byte* bytes) {
  const plan::Chunk& chunk = chunks_.at(chunk_index);
  std::uint64_t offset = 0;
  for (std::size_t s = 0; s < chunk.segments.size(); ++s) {
    const plan::Segment& segment = chunk.segments[s];
    if (segment.tensor != plan::Segment::kHeader) hashes_[chunk_index][s] = format::xxh3_64(bytes + offset, segment.length);
    offset += segment.length;
  }
}

format::Manifest ChecksumRecorder::manifest() const { return assemble(plan_, chunks_, hashes_); }

TensorChecksums::TensorChecksums(const plan::SavePlan& plan) : plan_(plan), places_(plan.tensors.size()), hashes_(plan.chunks.size()) {
  for (std::size_t c = 0; c < plan.chunks.size(); ++c) {
    const plan::Chunk& chunk = plan.chunks[c];
    hashes_[c].assign(chunk.segments.size(), 0);
    for (std::size_t s = 0; s < chunk.segments.size(); ++s) {
      if (chunk.segments[s].tensor != plan::Segment::kHeader) places_[chunk.segments[s].tensor].push_back(Place{c, s});
    }
  }
}

void TensorChecksums::record(std::size_t tensor_index, const TensorRef& host) {
  std::unique_ptr<std::byte[]> bounce;
  for (const Place& place : places_.at(tensor_index)) {
    const plan::Segment& segment = plan_.chunks[place.chunk].segments[place.segment];
    if (host.is_contiguous()) {
      hashes_[place.chunk][place.segment] =
          format::xxh3_64(static_cast<const std::byte*>(host.data) + segment.source_offset, segment.length);
      continue;
    }
    if (!bounce) bounce = std::make_unique<std::byte[]>(plan_.chunk_bytes);
    stage::copy_segment(host, segment.source_offset, segment.length, bounce.get());
    hashes_[place.chunk][place.segment] = format::xxh3_64(bounce.get(), segment.length);
  }
}

format::Manifest TensorChecksums::manifest() const { return assemble(plan_, plan_.chunks, hashes_); }

}  // namespace quicksave::engine
