// Google Benchmark micro-benchmarks of quicksave's hot paths: safetensors header encode/decode,
// index JSON, planning 100,000 tensors, pinned-pool lease/release, the verify checksum (XXH64)
// and the synthetic weight generator. `quicksave bench` is the end-to-end comparison.
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <vector>

#include "format/checksum.hpp"
#include "cli/synthetic.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/index.hpp"
#include "quicksave/safetensors.hpp"
#include "stage/pinned_pool.hpp"

namespace {

using namespace quicksave;

// `count` tensors with LLaMA-like names and a mix of 1-D and 2-D shapes.
std::vector<TensorSpec> specs(std::size_t count) {
  std::vector<TensorSpec> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::vector<std::uint64_t> shape = i % 3 == 0 ? std::vector<std::uint64_t>{4096} : std::vector<std::uint64_t>{4096, 11008};
    out.push_back({"model.layers." + std::to_string(i / 9) + ".t" + std::to_string(i % 9) + ".weight", DType::BF16, shape});
  }
  return out;
}

void BM_HeaderEncode(benchmark::State& state) {
  const auto tensors = specs(static_cast<std::size_t>(state.range(0)));
  const std::optional<StringMap> metadata = StringMap{{"format", "pt"}};
  std::size_t bytes = 0;
  for (auto _ : state) {
    FileLayout layout = layout_file(tensors, metadata);
    bytes = layout.header.size();
    benchmark::DoNotOptimize(layout);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["header_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_HeaderEncode)->Arg(291)->Arg(10'000)->Unit(benchmark::kMicrosecond);

void BM_HeaderDecode(benchmark::State& state) {
  const FileLayout layout = layout_file(specs(static_cast<std::size_t>(state.range(0))), StringMap{{"format", "pt"}});
  const std::span<const std::byte> prefix(reinterpret_cast<const std::byte*>(layout.header.data()), layout.header.size());
  for (auto _ : state) {
    Header header = decode_header(prefix, layout.file_bytes());
    benchmark::DoNotOptimize(header);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(layout.header.size()));
}
BENCHMARK(BM_HeaderDecode)->Arg(291)->Arg(10'000)->Unit(benchmark::kMicrosecond);

void BM_IndexJsonRoundTrip(benchmark::State& state) {
  ShardIndex index;
  index.metadata.set("total_size", std::int64_t{13'476'839'424});
  for (std::int64_t i = 0; i < state.range(0); ++i) {
    index.weight_map.emplace_back("model.layers." + std::to_string(i / 9) + ".t" + std::to_string(i % 9) + ".weight",
                                  "model-0000" + std::to_string(1 + i % 3) + "-of-00003.safetensors");
  }
  for (auto _ : state) {
    ShardIndex parsed = parse_index_json(index_to_json(index));
    benchmark::DoNotOptimize(parsed);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_IndexJsonRoundTrip)->Arg(10'000)->Unit(benchmark::kMillisecond);

// parse_index_json alone for 10k, 100k and 1M entries: linear (the ordered_json reader it replaced
// was quadratic: 80k entries took 7.9 s, 2M would have taken over an hour).
void BM_IndexJsonParse(benchmark::State& state) {
  ShardIndex index;
  index.metadata.set("total_size", std::int64_t{13'476'839'424});
  for (std::int64_t i = 0; i < state.range(0); ++i) {
    index.weight_map.emplace_back("model.layers." + std::to_string(i / 9) + ".t" + std::to_string(i % 9) + ".weight",
                                  "model-0000" + std::to_string(1 + i % 3) + "-of-00003.safetensors");
  }
  const std::string text = index_to_json(index);
  for (auto _ : state) {
    ShardIndex parsed = parse_index_json(text);
    benchmark::DoNotOptimize(parsed);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(text.size()));
}
BENCHMARK(BM_IndexJsonParse)->Arg(10'000)->Arg(100'000)->Arg(1'000'000)->Unit(benchmark::kMillisecond);

// make_save_plan over 100,000 small tensors with their own storages: validation, de-duplication,
// the HF split, per-file header layout, the index and the chunk list.
void BM_Plan100kTensors(benchmark::State& state) {
  constexpr std::size_t kCount = 100'000;
  constexpr std::size_t kElements = 64;
  const auto memory = std::make_unique<float[]>(kCount * kElements);
  std::vector<TensorRef> tensors;
  tensors.reserve(kCount);
  for (std::size_t i = 0; i < kCount; ++i) {
    TensorRef t{.name = "blocks." + std::to_string(i / 10) + ".param" + std::to_string(i % 10), .dtype = DType::F32,
                .shape = {static_cast<std::int64_t>(kElements)}};
    t.data = t.storage_base = memory.get() + i * kElements;
    t.storage_nbytes = kElements * sizeof(float);
    tensors.push_back(std::move(t));
  }
  SaveOptions options;
  options.max_shard_size = ShardSize(static_cast<std::int64_t>(state.range(0)));
  std::size_t files = 0;
  for (auto _ : state) {
    plan::SavePlan plan = plan::make_save_plan(tensors, options);
    files = plan.files.size();
    benchmark::DoNotOptimize(plan);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kCount));
  state.counters["files"] = static_cast<double>(files);
}
BENCHMARK(BM_Plan100kTensors)->Arg(5'000'000'000)->Arg(2'000'000)->Unit(benchmark::kMillisecond);

// One lease and its return: the per-chunk cost of the staging pool.
void BM_PoolLeaseRelease(benchmark::State& state) {
  stage::PinnedPool pool(stage::PoolOptions{.budget_bytes = 64ull << 20, .buffer_bytes = 8ull << 20});
  for (auto _ : state) {
    stage::Lease lease = pool.acquire();
    benchmark::DoNotOptimize(lease.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PoolLeaseRelease);

// The same through acquire_async (the engine's path), with two threads contending.
void BM_PoolLeaseReleaseAsync(benchmark::State& state) {
  static stage::PinnedPool* pool = nullptr;
  if (state.thread_index() == 0) pool = new stage::PinnedPool(stage::PoolOptions{.budget_bytes = 16ull << 20, .buffer_bytes = 8ull << 20});
  for (auto _ : state) {
    std::atomic<bool> got{false};
    pool->acquire_async([&](stage::Lease lease) {
      benchmark::DoNotOptimize(lease.data());
      got = true;
    });
    while (!got.load()) {
    }
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    delete pool;
    pool = nullptr;
  }
}
BENCHMARK(BM_PoolLeaseReleaseAsync)->Threads(1)->Threads(2);

void BM_Xxh64(benchmark::State& state) {
  std::vector<std::byte> data(8u << 20);
  quicksave::cli::fill_synthetic(1, 0, DType::BF16, 0, data.data(), data.size());
  for (auto _ : state) benchmark::DoNotOptimize(quicksave::format::xxh64(data.data(), data.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(data.size()));
}
BENCHMARK(BM_Xxh64);

void BM_SyntheticFill(benchmark::State& state) {
  std::vector<std::byte> data(8u << 20);
  for (auto _ : state) {
    quicksave::cli::fill_synthetic(1, 0, DType::BF16, 0, data.data(), data.size());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(data.size()));
}
BENCHMARK(BM_SyntheticFill);

}  // namespace

BENCHMARK_MAIN();
