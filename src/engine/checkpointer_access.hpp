// CheckpointerAccess: the Checkpointer's entry points that name internal types, kept out of the
// public header. Tests build a Checkpointer over a fault-injecting I/O backend or file system;
// the distributed layer (src/dist) submits a save it planned with the other ranks, together with
// the coordinator that commits it across processes.
#pragma once

#include <filesystem>
#include <memory>

#include "commit/file_system.hpp"
#include "engine/coordinator.hpp"
#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/checkpointer.hpp"

namespace quicksave {

struct Checkpointer::Seams {
  std::unique_ptr<io::IoBackend> backend;        // null: the one CheckpointerOptions::io_backend picks
  std::unique_ptr<commit::FileSystem> file_system;  // null: the real (posix) file system
};

class CheckpointerAccess {
 public:
  // A Checkpointer writing through `backend` and committing through `file_system` (null: the defaults).
  static Checkpointer make(CheckpointerOptions options, std::unique_ptr<io::IoBackend> backend,
                           std::unique_ptr<commit::FileSystem> file_system = nullptr) {
    return Checkpointer(options, Checkpointer::Seams{std::move(backend), std::move(file_system)});
  }
  static std::unique_ptr<Checkpointer> make_unique(CheckpointerOptions options, std::unique_ptr<io::IoBackend> backend,
                                                   std::unique_ptr<commit::FileSystem> file_system = nullptr) {
    return std::unique_ptr<Checkpointer>(new Checkpointer(options, Checkpointer::Seams{std::move(backend), std::move(file_system)}));
  }
  // Runs an already planned save whose files and commit `coordinator` coordinates with other
  // processes (null: the single-process commit).
  static SaveHandle submit(Checkpointer& checkpointer, plan::SavePlan plan, const std::filesystem::path& directory,
                           const SaveOptions& options, std::unique_ptr<engine::SaveCoordinator> coordinator);
};

}  // namespace quicksave
