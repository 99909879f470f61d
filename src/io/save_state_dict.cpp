// The public synchronous save and recovery entry points (quicksave/save.hpp).
#include "io/commit.hpp"
#include "io/sync_writer.hpp"
#include "quicksave/save.hpp"

namespace quicksave {

SaveResult save_state_dict(std::vector<TensorRef> tensors, const std::filesystem::path& directory, const SaveOptions& options) {
  const plan::SavePlan plan = plan::make_save_plan(std::move(tensors), options);
  auto io = io::make_posix_backend(1);
  return io::write_plan_sync(plan, directory, options.is_main_process, *io);
}

std::vector<std::string> recover_checkpoint(const std::filesystem::path& directory) {
  auto io = io::make_posix_backend(1);
  return io::recover(*io, directory).actions;
}

}  // namespace quicksave
