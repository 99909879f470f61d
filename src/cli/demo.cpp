// `quicksave demo` (what `make demo` runs): an asynchronous save of a model-sized state dict while
// a simulated training loop keeps running on the caller's thread, then verify and reload.
//
//   1. generate a synthetic state dict (llama-7b-like, bf16, ~2 GB by default);
//   2. time training steps (a fixed matrix-multiply workload) without any save: the baseline;
//   3. save_async, then keep stepping until committed; after `staged` the loop starts changing
//      the weights (the optimizer step a real loop may only do once staged is ready);
//   4. verify the checkpoint (every header, the index, every byte) and reload it, comparing each
//      tensor with the weights as they were at save time (regenerated from the seed);
//   5. print the figures in a short table.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>

#include "cli/cli.hpp"
#include "cli/progress.hpp"
#include "cli/synthetic.hpp"
#include "cli/text_format.hpp"
#include "cli/verify.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/reader.hpp"

namespace quicksave::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kHelp = R"(Usage: quicksave demo [options]

An asynchronous save of a model-sized synthetic state dict while a simulated training loop runs
on the caller's thread, then a full verify and a reload that compares every tensor with the
weights as they were when the save started (the loop changes them as soon as `staged` is ready).
Prints: save_async blocking time, time to staged, time to committed, GB/s, the training-step
slowdown during the save, and the verify and reload results.

Options:
  --size SIZE            state dict size (default 2GB)
  --layout NAME          gpt2-xl | llama-7b-like (default llama-7b-like)
  --dir D                checkpoint folder (default: a new folder in the temporary directory,
                         removed at the end)
  --keep                 keep the checkpoint (the default folder is otherwise removed)
  --pinned-budget SIZE   staging memory (default: the state dict's size)
  --help                 this text

Exit status: 0 the checkpoint verified and reloaded identical; 1 otherwise; 2 usage error.
)";

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The simulated forward/backward pass: a dense matrix multiply, sized once so that a step takes
// about 20 ms on this machine without a save running.
class TrainingStep {
 public:
  TrainingStep() : a_(kN * kN, 0.5f), b_(kN * kN, 0.25f), c_(kN * kN, 0.0f) {
    const auto t0 = Clock::now();
    run_once();
    const double once = std::max(1e-5, since(t0));
    repetitions_ = std::max(1, static_cast<int>(0.020 / once));
  }
  // Returns the step's duration in seconds.
  double operator()() {
    const auto t0 = Clock::now();
    for (int r = 0; r < repetitions_; ++r) run_once();
    return since(t0);
  }

 private:
  static constexpr std::size_t kN = 128;
  void run_once() {
    for (std::size_t i = 0; i < kN; ++i) {
      for (std::size_t k = 0; k < kN; ++k) {
        const float aik = a_[i * kN + k];
        for (std::size_t j = 0; j < kN; ++j) c_[i * kN + j] += aik * b_[k * kN + j];
      }
    }
    a_[0] = c_[kN * kN - 1] * 1e-9f;  // a data dependency so that the work cannot be elided
  }
  std::vector<float> a_, b_, c_;
  int repetitions_ = 1;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Compares every tensor of the checkpoint in `dir` with the bytes `seed` generates; returns the
// number of tensors that differ or are missing, and fills `problems` with the first few.
std::size_t compare_reloaded(const fs::path& dir, const SyntheticModel& model, std::uint64_t seed, std::vector<std::string>& problems) {
  std::vector<SafetensorsFile> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.ends_with(".safetensors") && name[0] != '.') files.push_back(SafetensorsFile::open(entry.path()));
  }
  std::vector<std::byte> expected(8u << 20);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    const auto& t = model.tensors[i];
    const TensorEntry* entry = nullptr;
    const SafetensorsFile* holder = nullptr;
    for (const auto& f : files) {
      if ((entry = f.find(t.name)) != nullptr) {
        holder = &f;
        break;
      }
    }
    bool same = entry != nullptr && entry->nbytes() == t.nbytes && entry->dtype == model.dtype;
    if (same) {
      const auto data = holder->data(*entry);
      for (std::uint64_t o = 0; o < t.nbytes && same; o += expected.size()) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(expected.size(), t.nbytes - o));
        fill_synthetic(seed, i, model.dtype, o, expected.data(), n);
        same = std::memcmp(expected.data(), data.data() + o, n) == 0;
      }
    }
    if (!same) {
      ++bad;
      if (problems.size() < 5) problems.push_back("tensor `" + t.name + "` " + (entry ? "differs from the saved weights" : "is missing"));
    }
  }
  return bad;
}

}  // namespace

int run_demo(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {"keep"}, {"size", "layout", "dir", "pinned-budget"});
  if (!args.positional().empty()) throw UsageError("unexpected argument " + args.positional().front());
  const std::uint64_t size = parse_byte_size(args.value("size").value_or("2GB"), "size");
  const Layout layout = parse_layout(args.value("layout").value_or("llama-7b-like"));
  const bool default_dir = !args.value("dir");
  const fs::path dir = default_dir ? fs::temp_directory_path() / ("quicksave-demo-" + std::to_string(::getpid()))
                                   : fs::path(*args.value("dir"));
  constexpr std::uint64_t kSeed = 2024;

  const SyntheticModel model = plan_synthetic_model(layout, DType::BF16, size);
  std::printf("quicksave demo: %s in %zu tensors (%s) -> %s\n", human_bytes(model.total_bytes).c_str(), model.tensors.size(),
              model.description().c_str(), dir.string().c_str());
  std::fflush(stdout);
  SyntheticStateDict state(model, kSeed);
  CheckpointerOptions options = CheckpointerOptions::from_env();
  options.pinned_budget_bytes = args.value("pinned-budget") ? parse_byte_size(*args.value("pinned-budget"), "pinned-budget")
                                                            : (model.total_bytes + options.chunk_bytes - 1) / options.chunk_bytes * options.chunk_bytes;
  Checkpointer checkpointer(options);

  // 2. the baseline
  TrainingStep step;
  for (int i = 0; i < 3; ++i) step();  // warm-up
  std::vector<double> baseline;
  for (int i = 0; i < 20; ++i) baseline.push_back(step());

  // 3. the save, with training going on
  const auto t0 = Clock::now();
  SaveHandle handle = checkpointer.save_async(state.tensor_refs(), dir);
  const double blocked = since(t0);
  // Threads parked on the futures time the milestones exactly, whatever the loop is doing.
  auto staged_at = std::async(std::launch::async, [&] {
    handle.staged().wait();
    return since(t0);
  });
  auto committed_at = std::async(std::launch::async, [&] {
    handle.committed().wait();
    return since(t0);
  });
  std::vector<double> during;
  std::size_t steps_before_staged = 0;
  bool changed_weights = false;
  {
    ProgressBar bar("save", handle.progress().bytes_total);
    while (committed_at.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      during.push_back(step());
      if (!changed_weights && handle.staged().wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        // The optimizer step: allowed once staged, and the file must not see it.
        for (std::size_t i = 0; i < state.size(); ++i) std::memset(state.data(i), 0, std::min<std::uint64_t>(4096, model.tensors[i].nbytes));
        changed_weights = true;
      } else if (!changed_weights) {
        ++steps_before_staged;
      }
      const SaveProgress p = handle.progress();
      bar.update(p.bytes_written, "training step " + std::to_string(during.size()));
    }
  }
  const SaveResult result = handle.committed().get();
  const double staged = staged_at.get();
  const double committed = committed_at.get();

  // 4. verify and reload
  const VerifyReport report = verify_with_progress(dir, ProgressBar::terminal());
  std::vector<std::string> reload_problems;
  const std::size_t differing = compare_reloaded(dir, model, kSeed, reload_problems);

  const double base = median(baseline);
  const double with_save = median(during);
  Table table({"figure", "value"});
  table.add({"save_async blocked the caller", human_seconds(blocked)});
  table.add({"time to staged", human_seconds(staged) + " (" + std::to_string(steps_before_staged) + " training steps ran meanwhile)"});
  table.add({"time to committed (durable)", human_seconds(committed)});
  table.add({"throughput to committed", fixed(static_cast<double>(result.bytes_written) / committed / 1e9, 2) + " GB/s"});
  table.add({"training step without a save", human_seconds(base) + " (median of " + std::to_string(baseline.size()) + ")"});
  table.add({"training step during the save",
             during.empty() ? std::string("no step completed")
                            : human_seconds(with_save) + " (median of " + std::to_string(during.size()) + "; " +
                                  fixed(with_save / base, 2) + "x, slowest " + human_seconds(*std::max_element(during.begin(), during.end())) + ")"});
  table.add({"verify", report.valid() ? "OK (" + std::to_string(report.files.size()) + (report.files.size() == 1 ? " file, " : " files, ") + std::to_string(report.tensors) +
                                             " tensors, " + human_bytes(report.bytes_read) + " read)"
                                       : "INVALID (" + std::to_string(report.problems.size()) + " problems)"});
  table.add({"reload", differing == 0 ? std::to_string(model.tensors.size()) + " tensors identical to the weights at save time"
                                      : std::to_string(differing) + " tensors differ"});
  std::printf("\nbackend %s, commit mode %s, pinned budget %s, %zu %s\n\n", result.backend.c_str(), to_string(result.commit_mode),
              human_bytes(checkpointer.pinned_bytes()).c_str(), result.files.size(), result.files.size() == 1 ? "file" : "files");
  std::fputs(table.str().c_str(), stdout);
  for (const auto& p : report.problems) std::printf("verify problem: %s\n", p.c_str());
  for (const auto& p : reload_problems) std::printf("reload problem: %s\n", p.c_str());
  if (default_dir && !args.flag("keep")) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::printf("checkpoint kept in %s\n", dir.string().c_str());
  }
  return report.valid() && differing == 0 ? kExitOk : kExitFailure;
}

}  // namespace quicksave::cli
