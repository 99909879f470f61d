// ReadPlan: which reads a load makes, decided before any byte moves (pure, like SavePlan).
//
// Each target's bytes [begin, begin + nbytes) in its file are cut into pieces of at most
// `max_read` bytes, and, for verified loads, at the manifest's range boundaries too, so that a
// piece never straddles two hashed ranges: a range is hashed as soon as its last piece has
// landed, while its bytes are still in the CPU cache. Pieces are sorted by file and offset, so
// each file is read front to back (the kernel's readahead and the disk like that best).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "load/load_source.hpp"

namespace quicksave::load {

// A target after the engine's checks: which tensor of the source, and its memory.
struct ResolvedTarget {
  std::size_t tensor = 0;
  std::byte* data = nullptr;
  std::shared_ptr<const void> keepalive;  // LoadTarget::keepalive, dropped when the load ends
};

struct ReadPiece {
  std::size_t target = 0;
  std::size_t file = 0;
  std::uint64_t offset = 0;      // absolute, in the file
  std::uint64_t length = 0;
  std::uint64_t dst_offset = 0;  // in the target's memory
  std::ptrdiff_t range = -1;     // index into ReadPlan::ranges, or -1 (not verified)
};

// One hashed range of the manifest, in the target's memory once every piece of it has landed.
struct VerifyRange {
  std::size_t target = 0;
  std::size_t file = 0;
  std::uint64_t begin = 0;  // absolute file offsets, as the manifest says
  std::uint64_t end = 0;
  std::uint64_t hash = 0;
  std::uint64_t dst_offset = 0;
  std::uint32_t pieces = 0;
};

struct ReadPlan {
  std::vector<ReadPiece> pieces;
  std::vector<VerifyRange> ranges;
  std::uint64_t bytes = 0;
};

ReadPlan plan_reads(const LoadSource::State& source, const std::vector<ResolvedTarget>& targets, std::uint64_t max_read, bool verify);

}  // namespace quicksave::load
