// quicksave's side of the GPU benchmark (tests/gpu/gpu_bench.py), as a small C ABI that Python
// loads with ctypes, so that quicksave and the Python baselines save the very same GPU tensors in
// one process. Requests and results are JSON strings:
//   qs_bench_save   Checkpointer::save_async of the given tensors (data pointers from PyTorch),
//                   `repeats` times into <directory>/run<i>: how long save_async blocked, the time to `staged` and to
//                   `committed`, and the Checkpointer's construction time (pinned pool included);
//   qs_bench_d2h    the pinned device-to-host bandwidth the GPU offers for the same bytes:
//                   cudaMemcpyAsync of every tensor into a page-locked ring buffer, timed.
// Both return 0 and write the result, or return 1 and write {"error": ...}; never throw.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "quicksave/checkpointer.hpp"
#include "quicksave/dtype.hpp"
#include "quicksave/error.hpp"

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int reply(const json& value, char* out, std::size_t out_len, int rc) {
  const std::string text = value.dump();
  if (out != nullptr && out_len > 0) {
    const std::size_t n = std::min(text.size(), out_len - 1);
    std::memcpy(out, text.data(), n);
    out[n] = '\0';
  }
  return text.size() < out_len ? rc : 1;
}

std::vector<quicksave::TensorRef> tensors_of(const json& request) {
  std::vector<quicksave::TensorRef> tensors;
  for (const json& t : request.at("tensors")) {
    quicksave::TensorRef ref;
    ref.name = t.at("name").get<std::string>();
    const auto dtype = quicksave::dtype_from_name(t.at("dtype").get<std::string>());
    if (!dtype) throw quicksave::Error(quicksave::ErrorCode::invalid_argument, "unknown dtype for " + ref.name);
    ref.dtype = *dtype;
    ref.shape = t.at("shape").get<std::vector<std::int64_t>>();
    ref.strides = t.value("strides", std::vector<std::int64_t>{});
    const int device = t.value("device", -1);
    ref.device = device < 0 ? quicksave::Device{quicksave::DeviceKind::cpu, -1}
                            : quicksave::Device{quicksave::DeviceKind::cuda, device};
    ref.data = reinterpret_cast<const void*>(t.at("ptr").get<std::uintptr_t>());
    ref.storage_base = reinterpret_cast<const void*>(t.value("storage_ptr", t.at("ptr").get<std::uintptr_t>()));
    ref.storage_nbytes = t.value("storage_nbytes", ref.nbytes());
    tensors.push_back(std::move(ref));
  }
  return tensors;
}

}  // namespace

extern "C" {

int qs_bench_save(const char* request_text, char* out, std::size_t out_len) {
  try {
    const json request = json::parse(request_text);
    const std::vector<quicksave::TensorRef> tensors = tensors_of(request);
    const json& c = request.value("checkpointer", json::object());
    quicksave::CheckpointerOptions options;
    options.pinned_budget_bytes = c.value("pinned_budget_bytes", options.pinned_budget_bytes);
    options.chunk_bytes = c.value("chunk_bytes", options.chunk_bytes);
    options.worker_threads = c.value("worker_threads", options.worker_threads);
    options.queue_depth = c.value("queue_depth", options.queue_depth);
    options.direct_io = c.value("direct_io", options.direct_io);
    const std::string backend = c.value("io_backend", std::string("auto"));
    options.io_backend = backend == "posix"      ? quicksave::IoBackendChoice::posix
                         : backend == "io_uring" ? quicksave::IoBackendChoice::io_uring
                                                 : quicksave::IoBackendChoice::automatic;
    quicksave::SaveOptions save_options;
    if (request.contains("max_shard_size")) {
      save_options.max_shard_size = quicksave::ShardSize(request.at("max_shard_size").get<std::string>());
    }
    const std::filesystem::path directory = request.at("directory").get<std::string>();
    const int repeats = request.value("repeats", 1);

    json result;
    const auto init_start = Clock::now();
    quicksave::Checkpointer checkpointer(options);
    result["checkpointer_init_s"] = seconds_since(init_start);
    result["pinned_bytes"] = checkpointer.pinned_bytes();
    result["backend"] = checkpointer.backend_name();
    result["backend_fallback_reason"] = checkpointer.backend_fallback_reason();
    json runs = json::array();
    const bool sync_first = request.value("sync_before_each", true);
    for (int i = 0; i < repeats; ++i) {
      // Dirty pages of earlier steps (the previous run, a baseline) would otherwise be written
      // back during this run's fsyncs and charged to it.
      double synced = 0;
      if (sync_first) {
        const auto sync_start = Clock::now();
        ::sync();
        synced = seconds_since(sync_start);
      }
      // Each run into its own fresh folder, as a training loop's step-N checkpoints are.
      const std::filesystem::path into = directory / ("run" + std::to_string(i));
      const auto start = Clock::now();
      quicksave::SaveHandle handle = checkpointer.save_async(tensors, into, save_options);
      const double blocked = seconds_since(start);
      handle.staged().get();
      const double staged = seconds_since(start);
      const quicksave::SaveResult saved = handle.committed().get();
      const double committed = seconds_since(start);
      runs.push_back({{"blocked_s", blocked},
                      {"staged_s", staged},
                      {"committed_s", committed},
                      {"bytes_written", saved.bytes_written},
                      {"directory", into.string()},
                      {"sync_before_s", synced},
                      {"files", saved.files},
                      {"backend", saved.backend},
                      {"commit_mode", to_string(saved.commit_mode)}});
    }
    result["runs"] = runs;
    return reply(result, out, out_len, 0);
  } catch (const std::exception& e) {
    return reply(json{{"error", e.what()}}, out, out_len, 1);
  }
}

int qs_bench_d2h(const char* request_text, char* out, std::size_t out_len) {
  void* ring = nullptr;
  std::map<int, cudaStream_t> streams;
  auto cleanup = [&] {
    for (auto& [device, stream] : streams) {
      (void)cudaSetDevice(device);
      (void)cudaStreamDestroy(stream);
    }
    if (ring != nullptr) (void)cudaFreeHost(ring);
  };
  try {
    const json request = json::parse(request_text);
    const std::vector<quicksave::TensorRef> tensors = tensors_of(request);
    const std::size_t ring_bytes = request.value("pinned_bytes", std::size_t{1} << 30);
    const int repeats = request.value("repeats", 3);
    auto check = [](cudaError_t rc, const char* call) {
      if (rc != cudaSuccess) throw std::runtime_error(std::string(call) + ": " + cudaGetErrorName(rc));
    };
    check(cudaHostAlloc(&ring, ring_bytes, cudaHostAllocDefault), "cudaHostAlloc");
    std::uint64_t total = 0;
    for (const auto& t : tensors) {
      if (t.device.kind != quicksave::DeviceKind::cuda) continue;
      if (!streams.count(t.device.index)) {
        check(cudaSetDevice(t.device.index), "cudaSetDevice");
        check(cudaStreamCreateWithFlags(&streams[t.device.index], cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
      }
      total += t.nbytes();
    }
    json seconds = json::array();
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto start = Clock::now();
      std::size_t at = 0;
      for (const auto& t : tensors) {
        if (t.device.kind != quicksave::DeviceKind::cuda) continue;
        check(cudaSetDevice(t.device.index), "cudaSetDevice");
        std::uint64_t done = 0;
        const std::uint64_t n = t.nbytes();
        while (done < n) {  // the ring wraps: the bandwidth is what is measured, not the contents
          if (at == ring_bytes) at = 0;
          const std::uint64_t piece = std::min<std::uint64_t>(n - done, ring_bytes - at);
          check(cudaMemcpyAsync(static_cast<char*>(ring) + at, static_cast<const char*>(t.data) + done, piece,
                                cudaMemcpyDeviceToHost, streams[t.device.index]),
                "cudaMemcpyAsync");
          done += piece;
          at += piece;
        }
      }
      for (auto& [device, stream] : streams) check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      const double s = seconds_since(start);
      seconds.push_back(s);
      best = r == 0 ? s : std::min(best, s);
    }
    cleanup();
    return reply(json{{"bytes", total},
                      {"ring_bytes", ring_bytes},
                      {"seconds", seconds},
                      {"best_s", best},
                      {"gbps", best > 0 ? static_cast<double>(total) / best / 1e9 : 0.0}},
                 out, out_len, 0);
  } catch (const std::exception& e) {
    cleanup();
    return reply(json{{"error", e.what()}}, out, out_len, 1);
  }
}

}  // extern "C"
