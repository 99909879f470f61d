// crash_saver: the process the crash-point, lock and same-pid tests kill, run side by side, or put
// in other pid namespaces. Each command does one thing and says what happened on stdout.
//
//   crash_saver save DIR GEN [--writer sync|async] [--backend posix|io_uring] [--sharded N]
//                            [--crash-at N] [--wait-lock]
//       saves generation GEN (kTensors float tensors, every value == GEN) into DIR; --sharded N
//       cuts it into N shards (else one file); --crash-at N ends the process (_exit) just before
//       the Nth operation of either seam (data path or file system). Prints "saved"; exit 0,
//       1 on an error, 3 when another save holds the folder (busy).
//   crash_saver recover DIR          prints each action; exit 0
//   crash_saver hold DIR SECONDS     takes DIR's writer lock (as a save does), prints "holding"
//   crash_saver load DIR             prints "generation G" of the checkpoint as loads read it
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "commit/commit.hpp"
#include "commit/fault_file_system.hpp"
#include "engine/checkpointer_access.hpp"
#include "engine/sync_writer.hpp"
#include "io/fault_backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;

constexpr int kTensors = 6;
constexpr std::size_t kElements = 16 * 1024;  // 64 KiB per tensor

std::vector<TensorRef> synthetic(int generation) {
  std::vector<TensorRef> tensors;
  for (int i = 0; i < kTensors; ++i) {
    auto buffer = std::make_shared<std::vector<float>>(kElements, static_cast<float>(generation));
    TensorRef t{.name = "layers." + std::to_string(i) + ".weight", .dtype = DType::F32, .shape = {static_cast<std::int64_t>(kElements)}};
    t.data = t.storage_base = buffer->data();
    t.storage_nbytes = kElements * sizeof(float);
    t.keepalive = buffer;
    tensors.push_back(std::move(t));
  }
  return tensors;
}

std::string option(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 0; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return fallback;
}

bool flag(int argc, char** argv, const std::string& name) {
  for (int i = 0; i < argc; ++i) {
    if (argv[i] == name) return true;
  }
  return false;
}

int save(const fs::path& dir, int generation, int argc, char** argv) {
  const std::string writer = option(argc, argv, "--writer", "async");
  const std::string backend = option(argc, argv, "--backend", "posix");
  const int shards = std::atoi(option(argc, argv, "--sharded", "1").c_str());
  const int crash_at = std::atoi(option(argc, argv, "--crash-at", "0").c_str());
  SaveOptions options;
  options.wait_for_lock = flag(argc, argv, "--wait-lock");
  if (shards > 1) options.max_shard_size = static_cast<std::int64_t>((kTensors + shards - 1) / shards * kElements * sizeof(float));
  // Never fires without --crash-at (nth counts from 1; a huge nth is never reached).
  auto faults = std::make_shared<io::FaultPlan>(
      io::FaultSpec{.op = io::FaultOp::any, .kind = io::FaultKind::crash, .nth = crash_at > 0 ? crash_at : 1 << 30});
  auto make_io = [&]() -> std::unique_ptr<io::IoBackend> {
    return backend == "io_uring" ? io::make_uring_backend(16) : io::make_posix_backend(2);
  };
  if (writer == "sync") {
    io::FaultBackend io(make_io(), faults);
    commit::FaultFileSystem file_system(commit::make_posix_file_system(), faults);
    const plan::SavePlan plan = plan::make_save_plan(synthetic(generation), options);
    engine::write_plan_sync(plan, dir, options, io, file_system);
  } else {
    CheckpointerOptions ckpt_options;
    ckpt_options.chunk_bytes = 64 * 1024;
    ckpt_options.pinned_budget_bytes = 4 * 64 * 1024;  // smaller than the state dict: leases recycle
    Checkpointer ckpt = CheckpointerAccess::make(ckpt_options, std::make_unique<io::FaultBackend>(make_io(), faults),
                      std::make_unique<commit::FaultFileSystem>(commit::make_posix_file_system(), faults));
    ckpt.save(synthetic(generation), dir, options);
  }
  std::printf("saved\n");
  return 0;
}

int load(const fs::path& dir) {
  const CheckpointFolderView view = checkpoint_folder_view(dir);
  const auto path_of = [&](const std::string& name) {
    const auto it = view.redirected.find(name);
    return dir / (it == view.redirected.end() ? name : it->second);
  };
  std::vector<std::string> files;
  if (!view.hidden.contains("model.safetensors.index.json") && fs::exists(path_of("model.safetensors.index.json"))) {
    for (const auto& [name, file] : read_index_file(path_of("model.safetensors.index.json")).weight_map) {
      if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
    }
  } else {
    files.push_back("model.safetensors");
  }
  int generation = -1;
  int tensors = 0;
  for (const auto& file : files) {
    const SafetensorsFile st = SafetensorsFile::open(path_of(file));
    for (const auto& entry : st.header().tensors) {
      ++tensors;
      const auto bytes = st.data(entry);
      const float* values = reinterpret_cast<const float*>(bytes.data());
      for (std::size_t k = 0; k < bytes.size() / 4; ++k) {
        if (generation < 0) generation = static_cast<int>(values[k]);
        if (generation != static_cast<int>(values[k])) {
          std::printf("mixed\n");
          return 4;
        }
      }
    }
  }
  if (tensors != kTensors) {
    std::printf("incomplete: %d tensors\n", tensors);
    return 4;
  }
  std::printf("generation %d\n", generation);
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: crash_saver save|recover|hold|load DIR ...\n");
    return 2;
  }
  const std::string command = argv[1];
  const fs::path dir = argv[2];
  try {
    if (command == "save" && argc >= 4) return save(dir, std::atoi(argv[3]), argc, argv);
    if (command == "recover") {
      for (const auto& line : recover_checkpoint(dir)) std::printf("%s\n", line.c_str());
      return 0;
    }
    if (command == "load") return load(dir);
    if (command == "hold" && argc >= 4) {
      // A save in progress, as far as other writers can tell: Commit::begin takes the lock.
      auto file_system = commit::make_posix_file_system();
      commit::Commit held = commit::Commit::begin(*file_system, dir, commit::BeginOptions{.pattern = "model{suffix}.safetensors",
                                                                                           .outputs = {"model.safetensors"}});
      std::printf("holding\n");
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[3]) * 1000));
      return 0;
    }
  } catch (const Error& e) {
    std::printf("error: %s\n", e.what());
    return e.code() == ErrorCode::busy ? 3 : 1;
  }
  std::fprintf(stderr, "crash_saver: bad command\n");
  return 2;
}

}  // namespace
}  // namespace quicksave

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return quicksave::run(argc, argv);
}
