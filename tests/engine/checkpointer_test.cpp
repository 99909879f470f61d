// The asynchronous engine: byte identity with the synchronous writer, staged/committed
// semantics, bounded memory, concurrency, cancellation, shutdown and the fault matrix.
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "commit/checkpoint_fixture.hpp"
#include "commit/fault_file_system.hpp"
#include "engine/checkpointer_access.hpp"
#include "io/fault_backend.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::checkpoint_generation;
using testing::has_leftovers;
using testing::SyntheticStateDict;
using testing::TempDir;

using testing::read_file;

using testing::expect_same_files;

// A varied state dict: many dtypes, 0-d, empty, strided views, tied names, sizes across chunks.
struct VariedStateDict {
  explicit VariedStateDict(std::uint32_t seed) {
    std::mt19937 rng(seed);
    const DType dtypes[] = {DType::F32, DType::BF16, DType::F16, DType::I64, DType::U8, DType::BOOL, DType::F64, DType::C64};
    const int count = 5 + static_cast<int>(rng() % 30);
    for (int i = 0; i < count; ++i) {
      const DType dtype = dtypes[rng() % std::size(dtypes)];
      const int element = dtype_bits(dtype) / 8;
      std::vector<std::int64_t> shape;
      const int rank = static_cast<int>(rng() % 4);
      for (int d = 0; d < rank; ++d) shape.push_back(static_cast<std::int64_t>(rng() % (d == 0 ? 300 : 40)));
      std::uint64_t numel = 1;
      for (auto s : shape) numel *= static_cast<std::uint64_t>(s);
      auto buffer = std::make_shared<std::vector<unsigned char>>(numel * element + 1);
      for (auto& c : *buffer) c = static_cast<unsigned char>(dtype == DType::BOOL ? rng() % 2 : rng());
      TensorRef t{.name = "t" + std::to_string(i) + (rng() % 5 == 0 ? ".é" : ""), .dtype = dtype, .shape = shape};
      t.data = t.storage_base = buffer->data();
      t.storage_nbytes = numel * element;
      t.keepalive = buffer;
      if (rank == 2 && rng() % 3 == 0) {  // a transposed view of the same bytes
        t.shape = {shape[1], shape[0]};
        t.strides = {1, shape[1]};
      }
      tensors.push_back(t);
      if (rng() % 6 == 0) {  // tied alias: de-duplicated into metadata
        TensorRef alias = t;
        alias.name = t.name + ".tied";
        tensors.push_back(alias);
      }
    }
  }
  std::vector<TensorRef> tensors;
};

CheckpointerOptions small_options(std::uint64_t chunk = 64 * 1024, std::uint64_t budget = 4 * 64 * 1024) {
  CheckpointerOptions o;
  o.chunk_bytes = chunk;
  o.pinned_budget_bytes = budget;
  return o;
}

// The posix backend with every write delayed by `latency`: keeps a save in flight.
std::unique_ptr<io::IoBackend> slow_writes(std::chrono::milliseconds latency) {
  return std::make_unique<io::FaultBackend>(
      io::make_posix_backend(2), io::FaultSpec{.op = io::FaultOp::write, .kind = io::FaultKind::latency, .nth = 0, .latency = latency});
}

class ByBackend : public ::testing::TestWithParam<IoBackendChoice> {};

TEST_P(ByBackend, FilesAreByteIdenticalToTheSynchronousWriter) {
  TempDir tmp;
  auto options = small_options();
  options.io_backend = GetParam();
  Checkpointer ckpt(options);
  int files = 0;
  for (std::uint32_t seed = 1; seed <= 25; ++seed) {
    SCOPED_TRACE(seed);
    VariedStateDict sd(seed);
    SaveOptions save_options;
    save_options.max_shard_size = static_cast<std::int64_t>(20000 + seed * 5000);
    save_options.metadata.set("seed", std::to_string(seed));
    const fs::path sync_dir = tmp.path() / ("sync" + std::to_string(seed));
    const fs::path async_dir = tmp.path() / ("async" + std::to_string(seed));
    save_state_dict(sd.tensors, sync_dir, save_options);
    const SaveResult result = ckpt.save(sd.tensors, async_dir, save_options);
    files += expect_same_files(sync_dir, async_dir);
    EXPECT_EQ(result.files.size() + (result.manifest.empty() ? 0 : 1),
              static_cast<std::size_t>(std::distance(fs::directory_iterator(async_dir), fs::directory_iterator())));
    EXPECT_EQ(result.manifest, "model.safetensors.quicksave-manifest.json");
  }
  EXPECT_GT(files, 50);
}

TEST_P(ByBackend, DirectIoGivesTheSameBytes) {
  TempDir tmp;
  auto options = small_options();
  options.io_backend = GetParam();
  options.direct_io = true;
  Checkpointer ckpt(options);
  VariedStateDict sd(99);
  save_state_dict(sd.tensors, tmp.path() / "sync");
  const auto result = ckpt.save(sd.tensors, tmp.path() / "async");
  EXPECT_GE(expect_same_files(tmp.path() / "sync", tmp.path() / "async"), 1);
  RecordProperty("backend", result.backend);
}

INSTANTIATE_TEST_SUITE_P(Backends, ByBackend, ::testing::Values(IoBackendChoice::posix, IoBackendChoice::io_uring),
                         [](const auto& info) { return info.param == IoBackendChoice::posix ? "posix" : "io_uring"; });

TEST(Checkpointer, StagedMeansTheWeightsMayChange) {
  TempDir tmp;
  Checkpointer ckpt(small_options(64 * 1024, 64 * 1024 * 64));
  SyntheticStateDict sd(7, 8, 100000);  // 3.2 MB, fits the pool
  SaveHandle handle = ckpt.save_async(sd.tensors, tmp.path() / "c");
  handle.staged().get();
  for (auto& t : sd.tensors) {  // the optimizer step
    auto* values = static_cast<float*>(const_cast<void*>(t.data));
    for (std::size_t i = 0; i < 100000; ++i) values[i] = 8.f;
  }
  handle.committed().get();
  EXPECT_EQ(checkpoint_generation(tmp.path() / "c", 8), 7);
  const auto progress = handle.progress();
  EXPECT_EQ(progress.bytes_staged, progress.bytes_total);
  EXPECT_EQ(progress.bytes_written, progress.bytes_total);
}

TEST(Checkpointer, TensorsAreReleasedOnceStaged) {
  TempDir tmp;
  Checkpointer ckpt(small_options());
  SaveHandle handle;
  std::weak_ptr<const void> watch;
  {
    SyntheticStateDict sd(4, 2, 1000);
    watch = sd.tensors[0].keepalive;
    handle = ckpt.save_async(sd.tensors, tmp.path() / "c");
  }  // the caller dropped its tensors: only the save holds them now
  handle.staged().get();
  EXPECT_TRUE(watch.expired());
  handle.committed().get();
  EXPECT_EQ(checkpoint_generation(tmp.path() / "c", 2), 4);
}

TEST(Checkpointer, SaveAsyncReturnsBeforeCopying) {
  TempDir tmp;
  // One buffer and writes that each take 100 ms: staging the 3 chunks must wait for two writes,
  // so a save_async that copied on the caller's thread could not return with staging unfinished.
  auto slow = slow_writes(std::chrono::milliseconds(100));
  Checkpointer ckpt = CheckpointerAccess::make(small_options(64 * 1024, 64 * 1024), std::move(slow));
  SyntheticStateDict sd(1, 3, 16000);
  SaveHandle handle = ckpt.save_async(sd.tensors, tmp.path() / "c");
  EXPECT_NE(handle.staged().wait_for(std::chrono::seconds(0)), std::future_status::ready);
  handle.committed().get();
  EXPECT_EQ(handle.staged().wait_for(std::chrono::seconds(0)), std::future_status::ready);
}

// Completion callbacks: each runs exactly once, after its future is ready (so it may read it),
// staged before committed; one registered after completion runs at once; a throwing one is ignored.
TEST(Checkpointer, CompletionCallbacksRunOnceWhenTheFuturesAreReady) {
  TempDir tmp;
  auto slow = slow_writes(std::chrono::milliseconds(20));
  Checkpointer ckpt = CheckpointerAccess::make(small_options(64 * 1024, 64 * 1024), std::move(slow));
  SyntheticStateDict sd(1, 3, 16000);
  SaveHandle handle = ckpt.save_async(sd.tensors, tmp.path() / "c");
  std::mutex mutex;
  std::vector<std::string> events;
  auto record = [&](const std::string& what, bool ready) {
    std::lock_guard lock(mutex);
    events.push_back(what + (ready ? "" : " (not ready)"));
  };
  std::promise<void> committed_callback_ran;
  handle.when_committed([&] {
    record("committed", handle.committed().wait_for(std::chrono::seconds(0)) == std::future_status::ready);
    committed_callback_ran.set_value();
  });
  handle.when_staged([&] { record("staged", handle.staged().wait_for(std::chrono::seconds(0)) == std::future_status::ready); });
  handle.when_staged([] { throw std::runtime_error("ignored"); });
  EXPECT_FALSE(handle.committed().get().files.empty());
  // The callback runs on the engine thread right after the promise: wait for it (no clock).
  committed_callback_ran.get_future().wait();
  bool ran_here = false;
  handle.when_committed([&] { ran_here = true; });
  EXPECT_TRUE(ran_here) << "a callback registered after completion runs at once";
  std::lock_guard lock(mutex);
  EXPECT_EQ(events, (std::vector<std::string>{"staged", "committed"}));
}

TEST(Checkpointer, CompletionCallbacksRunWhenTheSaveFails) {
  TempDir tmp;
  Checkpointer ckpt = CheckpointerAccess::make(small_options(), std::make_unique<io::FaultBackend>(
                                         io::make_posix_backend(2),
                                         io::FaultSpec{.op = io::FaultOp::write, .kind = io::FaultKind::eio, .nth = 1}));
  SyntheticStateDict sd(1, 3, 16000);
  SaveHandle handle = ckpt.save_async(sd.tensors, tmp.path() / "c");
  std::promise<bool> staged_failed, committed_failed;
  auto failed = [](const auto& future) {
    try {
      future.get();
      return false;
    } catch (const Error&) {
      return true;
    }
  };
  handle.when_staged([&] { staged_failed.set_value(failed(handle.staged())); });
  handle.when_committed([&] { committed_failed.set_value(failed(handle.committed())); });
  auto staged = staged_failed.get_future();
  auto committed = committed_failed.get_future();
  ASSERT_EQ(committed.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(committed.get());
  ASSERT_EQ(staged.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  // Staging may complete before the failing write: either outcome is a ready future.
  staged.get();
}

std::uint64_t anonymous_resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size, resident, shared;
  statm >> size >> resident >> shared;
  return (resident - shared) * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

TEST(Checkpointer, MemoryDoesNotGrowWithTheNumberOfSaves) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizer allocators keep freed memory resident (quarantine, shadow): RSS says nothing here";
#endif
  TempDir tmp;
  Checkpointer ckpt(small_options(1 << 20, 16 << 20));
  SyntheticStateDict sd(3, 16, 256 * 1024);  // 16 MiB
  ckpt.save(sd.tensors, tmp.path() / "warmup");
  ckpt.save(sd.tensors, tmp.path() / "c");
  const std::uint64_t after_first = anonymous_resident_bytes();
  for (int i = 0; i < 20; ++i) ckpt.save(sd.tensors, tmp.path() / "c");
  const std::uint64_t after_twenty = anonymous_resident_bytes();
  // The pool (16 MiB) is allocated once; allow a few MiB of allocator noise, far below one save.
  EXPECT_LT(after_twenty, after_first + (4 << 20)) << after_first << " -> " << after_twenty;
  EXPECT_EQ(ckpt.pinned_bytes(), 16u << 20);
}

TEST(Checkpointer, SeveralSavesInFlight) {
  TempDir tmp;
  auto options = small_options();
  options.max_in_flight_saves = 3;
  Checkpointer ckpt(options);
  std::vector<SyntheticStateDict> dicts;
  for (int g = 0; g < 8; ++g) dicts.emplace_back(g, 4, 30000);
  std::vector<SaveHandle> handles;
  for (int g = 0; g < 8; ++g) handles.push_back(ckpt.save_async(dicts[g].tensors, tmp.path() / ("c" + std::to_string(g))));
  for (int g = 0; g < 8; ++g) {
    handles[g].committed().get();
    EXPECT_EQ(checkpoint_generation(tmp.path() / ("c" + std::to_string(g)), 4), g);
  }
}

TEST(Checkpointer, WhenBusyFailRefusesExtraSaves) {
  TempDir tmp;
  auto slow = slow_writes(std::chrono::milliseconds(50));
  auto options = small_options();
  options.max_in_flight_saves = 1;
  options.when_busy = WhenBusy::fail;
  Checkpointer ckpt = CheckpointerAccess::make(options, std::move(slow));
  SyntheticStateDict sd(1, 4, 30000);
  SaveHandle first = ckpt.save_async(sd.tensors, tmp.path() / "a");
  try {
    ckpt.save_async(sd.tensors, tmp.path() / "b");
    ADD_FAILURE() << "second save admitted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted);
  }
  first.committed().get();
}

TEST(Checkpointer, CancelMidSaveKeepsThePreviousCheckpoint) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "c";
  save_state_dict(SyntheticStateDict(1, 6, 40000).tensors, dir);
  auto slow = slow_writes(std::chrono::milliseconds(30));
  Checkpointer ckpt = CheckpointerAccess::make(small_options(), std::move(slow));
  SyntheticStateDict sd(2, 6, 40000);
  SaveHandle handle = ckpt.save_async(sd.tensors, dir);
  handle.cancel();
  try {
    handle.committed().get();
    ADD_FAILURE() << "not cancelled";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled);
  }
  EXPECT_EQ(checkpoint_generation(dir, 6), 1);
  EXPECT_FALSE(has_leftovers(dir));
}

TEST(Checkpointer, DestroyingWithSavesInFlightCompletesThem) {
  TempDir tmp;
  std::vector<SaveHandle> handles;
  SyntheticStateDict sd(5, 6, 40000);
  {
    auto options = small_options();
    options.max_in_flight_saves = 1;  // the others wait in the queue
    Checkpointer ckpt(options);
    for (int i = 0; i < 4; ++i) handles.push_back(ckpt.save_async(sd.tensors, tmp.path() / ("c" + std::to_string(i))));
  }
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(handles[i].committed().wait_for(std::chrono::seconds(0)), std::future_status::ready);
    handles[i].committed().get();
    EXPECT_EQ(checkpoint_generation(tmp.path() / ("c" + std::to_string(i)), 6), 5);
  }
}

// Every injected fault at every stage: committed() throws a precise error, the previous
// checkpoint still loads with identical bytes, and no temporary remains.
TEST(Checkpointer, FaultMatrix) {
  const io::FaultOp ops[] = {io::FaultOp::create, io::FaultOp::write, io::FaultOp::sync, io::FaultOp::rename,
                             io::FaultOp::exchange, io::FaultOp::make_directory, io::FaultOp::sync_directory,
                             io::FaultOp::write_file, io::FaultOp::hard_link};
  const io::FaultKind kinds[] = {io::FaultKind::eio, io::FaultKind::enospc};
  int injected = 0;
  for (const bool model_folder : {false, true}) {
   for (const bool same_names : {false, true}) {  // the new save replaces files of the same names (backups)
    for (const auto op : ops) {
      for (const auto kind : kinds) {
        for (int nth = 1; nth <= 3; ++nth) {
          SCOPED_TRACE("op=" + std::to_string(static_cast<int>(op)) + " kind=" + std::to_string(static_cast<int>(kind)) +
                       " nth=" + std::to_string(nth) + (model_folder ? " model-folder" : "") + (same_names ? " same-names" : ""));
          TempDir tmp;
          const fs::path dir = tmp.path() / "c";
          SaveOptions sharded;
          sharded.max_shard_size = 300000;
          save_state_dict(SyntheticStateDict(1, 6, 40000).tensors, dir, sharded);
          if (model_folder) std::ofstream(dir / "config.json") << "{}";
          const std::string before = read_file(dir / "model-00001-of-00002.safetensors");
          bool threw = false;
          bool fired = false;
          {
            // One plan drives both seams: the data path and the commit's file system.
            auto plan = std::make_shared<io::FaultPlan>(io::FaultSpec{.op = op, .kind = kind, .nth = nth});
            Checkpointer ckpt = CheckpointerAccess::make(small_options(), std::make_unique<io::FaultBackend>(io::make_posix_backend(2), plan),
                              std::make_unique<commit::FaultFileSystem>(commit::make_posix_file_system(), plan));
            // One file (the old shards are stale and must survive a failure), or the same shards.
            SaveOptions next = same_names ? sharded : SaveOptions{};
            SyntheticStateDict sd(2, 6, 40000);
            try {
              ckpt.save(sd.tensors, dir, next);
            } catch (const Error& e) {
              threw = true;
              EXPECT_EQ(e.errno_value(), kind == io::FaultKind::eio ? EIO : ENOSPC) << e.what();
              EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos) << e.what();
            }
            fired = plan->fired();
          }  // the Checkpointer has finished everything, including removing the replaced tree
          if (threw) {
            EXPECT_TRUE(fired);
            ++injected;
            EXPECT_EQ(checkpoint_generation(dir, 6), 1);
            EXPECT_EQ(read_file(dir / "model-00001-of-00002.safetensors"), before);
          } else {
            EXPECT_EQ(checkpoint_generation(dir, 6), 2);
          }
          EXPECT_FALSE(has_leftovers(dir));
        }
      }
    }
   }
  }
  EXPECT_GE(injected, 60);  // the others fire after the commit point or never (the op is not reached)
}

}  // namespace
}  // namespace quicksave
