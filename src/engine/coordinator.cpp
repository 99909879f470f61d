// LocalCoordinator: the single-process commit (io::Commit) behind the SaveCoordinator interface.
#include "engine/coordinator.hpp"

#include <optional>

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

  void begin(io::IoBackend& io, const plan::SavePlan& plan, const std::filesystem::path& directory,
             bool is_main_process) override {
    commit_.emplace(io::Commit::begin(io, directory, plan.pattern, plan.output_names(), is_main_process));
  }

  std::filesystem::path staging_path(const std::string& name) const override { return commit_->staging_path(name); }

  io::CommitResult publish(io::IoBackend& io, const plan::SavePlan& plan) override {
    if (plan.index_filename) io.write_file_durably(commit_->staging_path(*plan.index_filename), plan.index_json);
    return commit_->publish();
  }

  void abort(const std::exception_ptr&) noexcept override { commit_.reset(); }

 private:
  Assignment assignment_;
  std::optional<io::Commit> commit_;
};

}  // namespace

std::unique_ptr<SaveCoordinator> make_local_coordinator(const plan::SavePlan& plan) {
  return std::make_unique<LocalCoordinator>(plan);
}

}  // namespace quicksave::engine
