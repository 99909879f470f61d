// The synchronous writer: carries out a SavePlan with blocking writes straight from the tensors'
// memory (a bounce buffer only for strided tensors), then publishes through Commit.
#pragma once

#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/save.hpp"

namespace quicksave::io {

SaveResult write_plan_sync(const plan::SavePlan& plan, const fs::path& directory, bool is_main_process, IoBackend& io);

}  // namespace quicksave::io
