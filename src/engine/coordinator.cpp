// LocalCoordinator: the single-process commit (commit::Commit) behind the SaveCoordinator interface.
#include "engine/coordinator.hpp"

#include <optional>

#include "commit/names.hpp"
#include "engine/sync_writer.hpp"

namespace quicksave::engine {

Assignment whole_plan(const plan::SavePlan& plan) {
  Assignment a;
  for (std::size_t f = 0; f < plan.files.size(); ++f) a.files.push_back(Assignment::File{f, true});
  a.chunks = plan.chunks;
  return a;
}

namespace {

class LocalCoordinator : public SaveCoordinator {
 public:
  explicit LocalCoordinator(const plan::SavePlan& plan) : assignment_(whole_plan(plan)) {}

  const Assignment& assignment() const override { return assignment_; }

  void begin(commit::FileSystem& fs, const plan::SavePlan& plan, const std::filesystem::path& directory,
             const CommitSettings& settings) override {
    checksums_ = settings.checksums;
    commit_.emplace(commit::Commit::begin(fs, directory,
                                          commit::BeginOptions{.pattern = plan.pattern,
                                                               .outputs = commit_outputs(plan, settings.checksums),
                                                               .is_main_process = settings.is_main_process,
                                                               .wait_for_lock = settings.wait_for_lock}));
  }

  bool publishes_manifest() const override { return checksums_; }

  std::filesystem::path staging_path(const std::string& name) const override { return commit_->staging_path(name); }

  commit::CommitResult publish(const plan::SavePlan& plan, const std::optional<std::string>& manifest_json) override {
    std::vector<std::pair<std::string, std::string>> small_files;
    if (plan.index_filename) small_files.emplace_back(*plan.index_filename, plan.index_json);
    if (manifest_json) small_files.emplace_back(commit::manifest_name(plan.pattern), *manifest_json);
    return commit_->publish(small_files);
  }

  void release_previous() noexcept override {
    if (commit_) commit_->release_previous();
    commit_.reset();
  }

  void abort(const std::exception_ptr&) noexcept override { commit_.reset(); }

 private:
  Assignment assignment_;
  bool checksums_ = false;
  std::optional<commit::Commit> commit_;
};

}  // namespace

std::unique_ptr<SaveCoordinator> make_local_coordinator(const plan::SavePlan& plan) {
  return std::make_unique<LocalCoordinator>(plan);
}

}  // namespace quicksave::engine
