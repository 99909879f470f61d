// StoreCoordinator: see store_coordinator.hpp for the protocol.
#include "dist/store_coordinator.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "quicksave/error.hpp"

namespace quicksave::dist {
namespace {

using Clock = std::chrono::steady_clock;

class StoreCoordinator : public engine::SaveCoordinator {
 public:
  StoreCoordinator(CoordinatorConfig config, engine::Assignment assignment)
      : config_(std::move(config)), assignment_(std::move(assignment)) {}

  ~StoreCoordinator() override { stop_heartbeat(); }

  const engine::Assignment& assignment() const override { return assignment_; }

  // No checksum manifest: each rank stages only its share, so no rank holds every hash.
  void begin(commit::FileSystem& fs, const plan::SavePlan& plan, const std::filesystem::path& directory,
             const engine::CommitSettings& settings) override {
    fs_ = &fs;
    for (const auto& file : plan.files) names_.push_back(file.filename);
    start_heartbeat();
    if (config_.rank == 0) {
      commit_.emplace(commit::Commit::begin(fs, directory,
                                            commit::BeginOptions{.pattern = plan.pattern,
                                                                 .outputs = plan.output_names(),
                                                                 .is_main_process = settings.is_main_process,
                                                                 .wait_for_lock = settings.wait_for_lock}));
      layout_ = commit_->layout();
      config_.store->set(key("layout"), layout_.to_string());
    } else {
      layout_ = commit::StagingLayout::parse(wait_for(key("layout"), 0, "to prepare the commit"));
    }
  }

  std::filesystem::path staging_path(const std::string& name) const override { return layout_.path_of(name); }

  void files_created() override { config_.store->set(key("created/" + std::to_string(config_.rank)), "1"); }

  void wait_for_files_of_others() override {
    std::set<int> owners;
    for (const auto& f : assignment_.files) {
      if (!f.owner) owners.insert(config_.file_owner.at(f.file));
    }
    for (const int owner : owners) wait_for(key("created/" + std::to_string(owner)), owner, "to create its files");
  }

  commit::CommitResult publish(const plan::SavePlan& plan, const std::optional<std::string>&) override {
    config_.store->set(key("done/" + std::to_string(config_.rank)), "1");
    if (config_.rank != 0) {
      wait_for(key("published"), 0, "to publish the checkpoint");
      try {
        config_.store->set(key("seen/" + std::to_string(config_.rank)), "1");
      } catch (const std::exception&) {
        // Published is committed even if the store went away with rank 0 just now.
      }
      stop_heartbeat();
      return commit::CommitResult{layout_.mode, {}, {}};
    }
    for (int r = 1; r < config_.world_size; ++r) wait_for(key("done/" + std::to_string(r)), r, "to make its files durable");
    std::vector<std::pair<std::string, std::string>> small_files;
    if (plan.index_filename) small_files.emplace_back(*plan.index_filename, plan.index_json);
    commit::CommitResult result = commit_->publish(small_files);
    config_.store->set(key("published"), "1");
    for (int r = 1; r < config_.world_size; ++r) {
      try {
        wait_for(key("seen/" + std::to_string(r)), r, "to see the checkpoint published", /*stop_on_failure=*/false);
      } catch (const Error&) {
        // Published is committed: a rank gone silent after its files were durable changes nothing.
      }
    }
    stop_heartbeat();
    return result;
  }

  void release_previous() noexcept override {
    if (commit_) commit_->release_previous();
    commit_.reset();
  }

  void abort(const std::exception_ptr& error) noexcept override {
    try {
      config_.store->set_if_absent(key("failed"), "rank " + std::to_string(config_.rank) + ": " + describe(error));
    } catch (...) {
      // The store is gone too: the other ranks time out.
    }
    if (commit_) {
      // Rank 0's staging area holds every rank's files: remove it only once the others have
      // stopped writing into it (or the timeout says they never will).
      for (int r = 1; r < config_.world_size; ++r) {
        try {
          wait_for(key("aborted/" + std::to_string(r)), r, "to stop writing", /*stop_on_failure=*/false);
        } catch (...) {
        }
      }
      stop_heartbeat();
      commit_.reset();
      return;
    }
    if (fs_ != nullptr && !layout_.target.empty()) {
      for (const auto& f : assignment_.files) {
        if (!f.owner) continue;
        try {
          fs_->remove(staging_path(owned_name(f.file)));
        } catch (...) {
        }
      }
    }
    try {
      config_.store->set(key("aborted/" + std::to_string(config_.rank)), "1");
    } catch (...) {
    }
    stop_heartbeat();
  }

 private:
  std::string key(const std::string& name) const { return config_.prefix + "/" + name; }
  const std::string& owned_name(std::size_t file) const { return names_.at(file); }

  static std::string describe(const std::exception_ptr& error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
    }
    return "unknown error";
  }

  // Every rank taking part publishes a counter that a thread of its own bumps a few times per
  // timeout: a rank whose counter stops moving is gone. Waits time out on silence, not on
  // duration, so a rank busy writing a large share is never mistaken for a dead one.
  void start_heartbeat() {
    const auto period = std::max(std::chrono::milliseconds(10), std::min(std::chrono::milliseconds(500), config_.timeout / 4));
    heartbeat_ = std::thread([this, period] {
      std::unique_lock lock(heartbeat_mutex_);
      for (std::uint64_t beat = 1; !heartbeat_stop_; ++beat) {
        try {
          config_.store->set(key("alive/" + std::to_string(config_.rank)), std::to_string(beat));
        } catch (...) {
          // The store is unreachable: the others see silence and time out.
        }
        heartbeat_wake_.wait_for(lock, period, [this] { return heartbeat_stop_; });
      }
    });
  }

  void stop_heartbeat() {
    {
      std::lock_guard lock(heartbeat_mutex_);
      heartbeat_stop_ = true;
    }
    heartbeat_wake_.notify_all();
    if (heartbeat_.joinable()) heartbeat_.join();
  }

  // Polls `k`, which rank `source` will set, until it exists, the save failed somewhere, or
  // `source` has been silent for the timeout.
  std::string wait_for(const std::string& k, int source, const std::string& what, bool stop_on_failure = true) {
    auto deadline = Clock::now() + config_.timeout;
    std::optional<std::string> last_beat;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      if (auto failed = stop_on_failure ? config_.store->try_get(key("failed")) : std::nullopt) {
        throw Error(ErrorCode::unavailable, "distributed save failed on " + *failed);
      }
      if (auto value = config_.store->try_get(k)) return *value;
      if (auto beat = config_.store->try_get(key("alive/" + std::to_string(source))); beat && beat != last_beat) {
        last_beat = std::move(beat);
        deadline = Clock::now() + config_.timeout;
      }
      if (Clock::now() > deadline) {
        throw Error(ErrorCode::unavailable, "rank " + std::to_string(source) + " stopped responding: rank " +
                                                std::to_string(config_.rank) + " heard nothing from it for " +
                                                std::to_string(config_.timeout.count()) + " ms while waiting for it " + what);
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  }

  CoordinatorConfig config_;
  engine::Assignment assignment_;
  std::vector<std::string> names_;  // the plan's file names, for abort
  commit::FileSystem* fs_ = nullptr;
  std::optional<commit::Commit> commit_;
  commit::StagingLayout layout_;
  std::thread heartbeat_;
  std::mutex heartbeat_mutex_;
  std::condition_variable heartbeat_wake_;
  bool heartbeat_stop_ = false;
};

}  // namespace

std::unique_ptr<engine::SaveCoordinator> make_store_coordinator(CoordinatorConfig config, engine::Assignment assignment) {
  return std::make_unique<StoreCoordinator>(std::move(config), std::move(assignment));
}

}  // namespace quicksave::dist
