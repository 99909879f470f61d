// The synchronous writer: carries out a SavePlan with blocking writes straight from the tensors'
// memory (a bounce buffer only for strided tensors), then publishes through Commit.
#pragma once

#include <functional>

#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/save.hpp"

namespace quicksave::io {

// Gives a host copy of a tensor that lives elsewhere (a GPU): the writer asks for one tensor at a
// time and drops it once written, so host memory stays bounded by the largest tensor.
using HostFetcher = std::function<TensorRef(const TensorRef&)>;

SaveResult write_plan_sync(const plan::SavePlan& plan, const fs::path& directory, bool is_main_process, IoBackend& io,
                           const HostFetcher& fetch_to_host = {});

}  // namespace quicksave::io
