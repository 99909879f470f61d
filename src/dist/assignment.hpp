// Which process writes what, in a distributed save. Pure functions of a SavePlan.
//
// replicated: every rank holds every tensor; whole files are assigned to ranks so that bytes are
//   balanced (largest file first, to the least loaded rank; ties to the lower rank).
// partitioned: each tensor lives on one rank; a file's lowest rank owns it (creates it and writes
//   its header), and every rank writes the byte ranges of its own tensors, so files may be shared.
#pragma once

#include <vector>

#include "engine/coordinator.hpp"
#include "plan/save_plan.hpp"

namespace quicksave::dist {

// The rank writing each file of the plan in the replicated layout.
std::vector<int> replicated_file_ranks(const plan::SavePlan& plan, int world_size);
engine::Assignment assign_replicated(const plan::SavePlan& plan, int rank, int world_size);

// `tensor_rank[i]`: the rank holding plan.tensors[i]. Owner of each file: its lowest rank.
std::vector<int> partitioned_file_owners(const plan::SavePlan& plan, const std::vector<int>& tensor_rank);
engine::Assignment assign_partitioned(const plan::SavePlan& plan, const std::vector<int>& tensor_rank, int rank);

}  // namespace quicksave::dist
