// The synchronous writer: carries out a SavePlan with blocking writes straight from the tensors'
// memory (a bounce buffer only for strided tensors), hashing each tensor for the manifest as it
// goes, then publishes through commit::Commit.
#pragma once

#include <functional>

#include "commit/file_system.hpp"
#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/save.hpp"

namespace quicksave::engine {

// Gives a host copy of a tensor that lives elsewhere (a GPU): the writer asks for one tensor at a
// time and drops it once written, so host memory stays bounded by the largest tensor.
using HostFetcher = std::function<TensorRef(const TensorRef&)>;

SaveResult write_plan_sync(const plan::SavePlan& plan, const std::filesystem::path& directory, const SaveOptions& options,
                           io::IoBackend& io, commit::FileSystem& fs, const HostFetcher& fetch_to_host = {});

// The outputs a single-process save publishes: the plan's files and index, then the manifest
// when checksums are on.
std::vector<std::string> commit_outputs(const plan::SavePlan& plan, bool checksums);

}  // namespace quicksave::engine
