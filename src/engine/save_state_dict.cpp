// The public synchronous save and recovery entry points (quicksave/save.hpp).
#include "commit/recovery.hpp"
#include "engine/sync_writer.hpp"
#include "quicksave/save.hpp"

namespace quicksave {

SaveResult save_state_dict(std::vector<TensorRef> tensors, const std::filesystem::path& directory, const SaveOptions& options) {
  const plan::SavePlan plan = plan::make_save_plan(std::move(tensors), options);
  auto io = io::make_posix_backend(1);
  auto fs = commit::make_posix_file_system();
  return engine::write_plan_sync(plan, directory, options, *io, *fs);
}

std::vector<std::string> recover_checkpoint(const std::filesystem::path& directory) {
  auto fs = commit::make_posix_file_system();
  const commit::RecoveryReport report = commit::recover(*fs, directory);
  std::vector<std::string> lines = report.actions;
  for (const auto& line : report.left_alone) lines.push_back("left alone: " + line);
  return lines;
}

CheckpointFolderView checkpoint_folder_view(const std::filesystem::path& directory) {
  auto fs = commit::make_posix_file_system();
  commit::CheckpointView view = commit::read_view(*fs, directory);
  return CheckpointFolderView{std::move(view.redirected), std::move(view.hidden), std::move(view.notes)};
}

}  // namespace quicksave
