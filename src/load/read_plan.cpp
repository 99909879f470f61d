// plan_reads (see read_plan.hpp).
#include "load/read_plan.hpp"

#include <algorithm>
#include <tuple>

namespace quicksave::load {

ReadPlan plan_reads(const LoadSource::State& source, const std::vector<ResolvedTarget>& targets, std::uint64_t max_read, bool verify) {
  ReadPlan plan;
  const auto cut = [&](std::size_t t, std::uint64_t begin, std::uint64_t end, std::uint64_t tensor_begin, std::ptrdiff_t range) {
    const auto& location = source.locations[targets[t].tensor];
    for (std::uint64_t at = begin; at < end; at += max_read) {
      const std::uint64_t length = std::min(max_read, end - at);
      plan.pieces.push_back(ReadPiece{t, location.file, at, length, at - tensor_begin, range});
      if (range >= 0) ++plan.ranges[static_cast<std::size_t>(range)].pieces;
    }
  };
  for (std::size_t t = 0; t < targets.size(); ++t) {
    const std::size_t tensor = targets[t].tensor;
    const auto& location = source.locations[tensor];
    const std::uint64_t begin = location.begin;
    const std::uint64_t end = begin + source.tensors[tensor].nbytes;
    plan.bytes += end - begin;
    if (!verify) {
      cut(t, begin, end, begin, -1);
      continue;
    }
    // The manifest's ranges tile the tensor (checked when the source was opened).
    for (const auto& range : source.ranges[tensor]) {
      plan.ranges.push_back(VerifyRange{t, location.file, range.begin, range.end, range.hash, range.begin - begin, 0});
      cut(t, range.begin, range.end, begin, static_cast<std::ptrdiff_t>(plan.ranges.size() - 1));
    }
  }
  std::stable_sort(plan.pieces.begin(), plan.pieces.end(),
                   [](const ReadPiece& a, const ReadPiece& b) { return std::tie(a.file, a.offset) < std::tie(b.file, b.offset); });
  return plan;
}

}  // namespace quicksave::load
