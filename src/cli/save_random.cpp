// `quicksave save-random DIR --size S`: writes a synthetic checkpoint (realistic names and shapes,
// deterministic bytes) through the asynchronous Checkpointer. An existing checkpoint in DIR is
// replaced by the engine's crash-safe commit: it stays loadable until the new one is durable.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "cli/progress.hpp"
#include "cli/synthetic.hpp"
#include "cli/text_format.hpp"
#include "quicksave/checkpointer.hpp"

namespace quicksave::cli {
namespace {

constexpr const char* kHelp = R"(Usage: quicksave save-random DIR --size SIZE [options]

Writes a synthetic checkpoint into DIR through the asynchronous save engine: realistic tensor
names and shapes, scaled (number of layers; below one layer, the widths too) to about SIZE bytes,
filled with finite weight-like values from a seeded generator. The same seed gives the same
bytes. When DIR already holds a checkpoint it is replaced through the crash-safe commit.

Options:
  --size SIZE             about this many bytes of tensors: 4GB, 512MB, 8MB or bytes (required)
  --layout NAME           gpt2-xl | llama-7b-like (default llama-7b-like)
  --seed N                generator seed (default 0)
  --dtype D               bf16 | f16 | f32 (default bf16)
  --max-shard-size SIZE   shard limit, as save_torch_state_dict takes it (default 5GB)
  --io-backend B          auto | io_uring | posix (default: QUICKSAVE_IO_BACKEND, else auto)
  --json                  print the result as JSON
  --help                  this text

The engine's other settings come from the QUICKSAVE_* environment variables
(CheckpointerOptions::from_env).

Exit status: 0 saved; 1 the save failed (the previous checkpoint is intact); 2 usage error.
)";

IoBackendChoice parse_backend(std::string_view name) {
  if (name == "auto") return IoBackendChoice::automatic;
  if (name == "io_uring") return IoBackendChoice::io_uring;
  if (name == "posix") return IoBackendChoice::posix;
  throw UsageError("--io-backend must be auto, io_uring or posix, got '" + std::string(name) + "'");
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int run_save_random(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {"json"}, {"size", "layout", "seed", "dtype", "max-shard-size", "io-backend"});
  const std::filesystem::path dir = args.one_positional("DIR");
  if (!args.value("size")) throw UsageError("--size is required");
  const std::uint64_t size = parse_byte_size(*args.value("size"), "size");
  const Layout layout = parse_layout(args.value("layout").value_or("llama-7b-like"));
  const DType dtype = parse_weight_dtype(args.value("dtype").value_or("bf16"));
  const std::uint64_t seed = args.value("seed") ? parse_count(*args.value("seed"), "seed") : 0;
  SaveOptions save_options;
  if (const auto s = args.value("max-shard-size")) save_options.max_shard_size = ShardSize(static_cast<std::int64_t>(parse_byte_size(*s, "max-shard-size")));
  CheckpointerOptions options = CheckpointerOptions::from_env();
  if (const auto b = args.value("io-backend")) options.io_backend = parse_backend(*b);
  const bool json = args.flag("json");

  const SyntheticModel model = plan_synthetic_model(layout, dtype, size);
  save_options.metadata.set("quicksave_layout", std::string(layout_name(layout)));
  save_options.metadata.set("quicksave_seed", std::to_string(seed));
  if (!json) {
    std::printf("generating %s: %zu tensors, %s (seed %llu)\n", model.description().c_str(), model.tensors.size(),
                human_bytes(model.total_bytes).c_str(), static_cast<unsigned long long>(seed));
    std::fflush(stdout);
  }
  const SyntheticStateDict state(model, seed);

  Checkpointer checkpointer(options);
  const auto start = std::chrono::steady_clock::now();
  SaveHandle handle = checkpointer.save_async(state.tensor_refs(), dir, save_options);
  const double blocked = seconds_since(start);
  // Threads parked on the futures time the milestones exactly while this one draws the bar.
  auto staged_at = std::async(std::launch::async, [&] {
    handle.staged().wait();
    return seconds_since(start);
  });
  auto committed_at = std::async(std::launch::async, [&] {
    handle.committed().wait();
    return seconds_since(start);
  });
  {
    ProgressBar bar("save", json ? 0 : handle.progress().bytes_total);
    while (committed_at.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      const SaveProgress p = handle.progress();
      bar.update(p.bytes_written, "staged " + human_bytes(p.bytes_staged));
    }
  }
  const double committed = committed_at.get();
  const SaveResult result = handle.committed().get();  // rethrows the save's error
  const double staged = staged_at.get();

  if (json) {
    const nlohmann::json out = {{"dir", dir.string()}, {"layout", layout_name(layout)}, {"dtype", dtype_name(dtype)},
                                {"seed", seed}, {"layers", model.layers}, {"tensors", model.tensors.size()},
                                {"tensor_bytes", model.total_bytes}, {"files", result.files}, {"bytes_written", result.bytes_written},
                                {"commit_mode", to_string(result.commit_mode)}, {"removed_stale", result.removed_stale},
                                {"backend", result.backend}, {"blocked_s", blocked}, {"staged_s", staged}, {"committed_s", committed}};
    std::printf("%s\n", out.dump(2).c_str());
    return kExitOk;
  }
  std::printf("saved %s: %zu %s, %s written; save_async returned in %s, staged after %s, committed after %s (%s GB/s)\n",
              dir.string().c_str(), result.files.size(), result.files.size() == 1 ? "file" : "files", human_bytes(result.bytes_written).c_str(), human_seconds(blocked).c_str(),
              human_seconds(staged).c_str(), human_seconds(committed).c_str(),
              fixed(static_cast<double>(result.bytes_written) / committed / 1e9, 2).c_str());
  std::printf("backend %s, commit mode %s%s\n", result.backend.c_str(), to_string(result.commit_mode),
              result.removed_stale.empty() ? "" : (", replaced " + std::to_string(result.removed_stale.size()) + " stale files").c_str());
  if (!checkpointer.backend_fallback_reason().empty()) {
    std::printf("note: io_uring not used: %s\n", checkpointer.backend_fallback_reason().c_str());
  }
  return kExitOk;
}

}  // namespace quicksave::cli
