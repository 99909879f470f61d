#include "dist/assignment.hpp"

#include <algorithm>
#include <numeric>

#include "quicksave/error.hpp"

namespace quicksave::dist {
namespace {

// One contiguous piece of a file that one rank writes.
struct Piece {
  std::uint64_t file_offset;
  std::uint64_t length;
  std::size_t tensor;  // plan::Segment::kHeader for the header
};

// Cuts the pieces of one file (sorted by offset) into chunks of at most chunk_bytes, never
// crossing a chunk_bytes boundary of the file (as the single-process plan does), merging
// adjacent pieces into one chunk.
void append_chunks(std::size_t file, const std::vector<Piece>& pieces, std::uint64_t chunk_bytes,
                   std::vector<plan::Chunk>& out) {
  plan::Chunk current;
  bool open = false;
  for (const Piece& piece : pieces) {
    std::uint64_t done = 0;
    while (done < piece.length) {
      const std::uint64_t at = piece.file_offset + done;
      const std::uint64_t boundary = (at / chunk_bytes + 1) * chunk_bytes;
      const std::uint64_t n = std::min(piece.length - done, boundary - at);
      const bool continues = open && current.file_offset + current.length == at && at % chunk_bytes != 0;
      if (!continues) {
        if (open) out.push_back(std::move(current));
        current = plan::Chunk{.file = file, .file_offset = at, .length = 0};
        open = true;
      }
      current.segments.push_back(plan::Segment{piece.tensor, done, n});
      current.length += n;
      done += n;
    }
  }
  if (open) out.push_back(std::move(current));
}

}  // namespace

std::vector<int> replicated_file_ranks(const plan::SavePlan& plan, int world_size) {
  if (world_size < 1) throw Error(ErrorCode::invalid_argument, "world size must be at least 1");
  std::vector<std::size_t> order(plan.files.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return plan.files[a].file_bytes > plan.files[b].file_bytes; });
  std::vector<std::uint64_t> load(static_cast<std::size_t>(world_size), 0);
  std::vector<int> rank_of(plan.files.size(), 0);
  for (const std::size_t f : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    rank_of[f] = static_cast<int>(least);
    load[static_cast<std::size_t>(least)] += plan.files[f].file_bytes;
  }
  return rank_of;
}

engine::Assignment assign_replicated(const plan::SavePlan& plan, int rank, int world_size) {
  const std::vector<int> rank_of = replicated_file_ranks(plan, world_size);
  engine::Assignment a;
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    if (rank_of[f] == rank) a.files.push_back(engine::Assignment::File{f, true});
  }
  for (const auto& chunk : plan.chunks) {
    if (rank_of[chunk.file] == rank) a.chunks.push_back(chunk);
  }
  return a;
}

std::vector<int> partitioned_file_owners(const plan::SavePlan& plan, const std::vector<int>& tensor_rank) {
  std::vector<int> owner(plan.files.size(), 0);
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    int lowest = -1;
    for (const auto& t : plan.files[f].tensors) {
      const int r = tensor_rank.at(t.source);
      if (lowest < 0 || r < lowest) lowest = r;
    }
    owner[f] = std::max(lowest, 0);
  }
  return owner;
}

engine::Assignment assign_partitioned(const plan::SavePlan& plan, const std::vector<int>& tensor_rank, int rank) {
  if (tensor_rank.size() != plan.tensors.size()) {
    throw Error(ErrorCode::internal, "tensor_rank has " + std::to_string(tensor_rank.size()) + " entries for " +
                                         std::to_string(plan.tensors.size()) + " tensors");
  }
  const std::vector<int> owner = partitioned_file_owners(plan, tensor_rank);
  engine::Assignment a;
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    const plan::PlannedFile& file = plan.files[f];
    std::vector<Piece> pieces;
    if (owner[f] == rank) pieces.push_back(Piece{0, file.header.size(), plan::Segment::kHeader});
    for (const auto& t : file.tensors) {
      if (tensor_rank[t.source] == rank && t.nbytes > 0) pieces.push_back(Piece{t.file_offset, t.nbytes, t.source});
    }
    const bool writes_here = owner[f] == rank || !pieces.empty();
    if (!writes_here) continue;
    a.files.push_back(engine::Assignment::File{f, owner[f] == rank});
    append_chunks(f, pieces, plan.chunk_bytes, a.chunks);
  }
  return a;
}

}  // namespace quicksave::dist
