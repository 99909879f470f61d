// HostCopier on hand-built SavePlans: a file image cut into chunks at arbitrary byte offsets
// (inside the header, inside elements, across tensors) comes out byte-exact; the copy happens in
// the executor's task, not in the caller; errors arrive through `done`, which runs exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "stage/copier.hpp"

namespace quicksave::stage {
namespace {

// Holds tasks until the test runs them, so it can see what happens before and after.
class ManualExecutor {
 public:
  Executor executor() {
    return [this](std::function<void()> task) { tasks_.push_back(std::move(task)); };
  }
  std::size_t pending() const { return tasks_.size(); }
  void run_all() {
    while (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      task();
    }
  }

 private:
  std::deque<std::function<void()>> tasks_;
};

// A plan for one file: a header then three tensors of different element sizes and layouts.
struct Fixture {
  Fixture() {
    std::mt19937 rng(5);
    for (auto& b : a_) b = static_cast<std::byte>(rng());
    for (auto& b : b_) b = static_cast<std::byte>(rng());
    for (auto& b : c_) b = static_cast<std::byte>(rng());

    plan::PlannedFile file;
    file.filename = "model.safetensors";
    file.header = std::string(8, '\0') + R"({"__metadata__":{"x":"y"}}   )";
    file.header[0] = static_cast<char>(file.header.size() - 8);
    plan.files.push_back(file);

    TensorRef a;  // F32 [2, 3], contiguous
    a.name = "a";
    a.dtype = DType::F32;
    a.shape = {2, 3};
    a.data = a_.data();
    TensorRef b;  // F16 [4, 3] viewed as the transpose of a [3, 4] matrix
    b.name = "b";
    b.dtype = DType::F16;
    b.shape = {4, 3};
    b.strides = {1, 4};
    b.data = b_.data();
    b.storage_base = b_.data();
    b.storage_nbytes = b_.size();
    TensorRef c;  // F64 [5] taken every other element
    c.name = "c";
    c.dtype = DType::F64;
    c.shape = {5};
    c.strides = {2};
    c.data = c_.data();
    plan.tensors = {a, b, c};

    // The expected file: header, then each tensor's C-order bytes.
    expected.assign(reinterpret_cast<const std::byte*>(file.header.data()),
                    reinterpret_cast<const std::byte*>(file.header.data()) + file.header.size());
    expected.insert(expected.end(), a_.begin(), a_.end());
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 3; ++j) {
        const std::size_t src = (static_cast<std::size_t>(j) * 4 + i) * 2;
        expected.insert(expected.end(), b_.begin() + src, b_.begin() + src + 2);
      }
    }
    for (int i = 0; i < 5; ++i) expected.insert(expected.end(), c_.begin() + i * 16, c_.begin() + i * 16 + 8);
    starts = {0, file.header.size(), file.header.size() + 24, file.header.size() + 48};
  }

  // The chunk covering file bytes [begin, end), with its segments.
  plan::Chunk chunk(std::uint64_t begin, std::uint64_t end) const {
    plan::Chunk chunk;
    chunk.file = 0;
    chunk.file_offset = begin;
    chunk.length = end - begin;
    const std::uint64_t piece_end[] = {starts[1], starts[2], starts[3], starts[3] + 40};
    for (std::size_t p = 0; p < 4; ++p) {
      const std::uint64_t lo = std::max(begin, starts[p]);
      const std::uint64_t hi = std::min(end, piece_end[p]);
      if (lo >= hi) continue;
      plan::Segment segment;
      segment.tensor = p == 0 ? plan::Segment::kHeader : p - 1;
      segment.source_offset = lo - starts[p];
      segment.length = hi - lo;
      chunk.segments.push_back(segment);
    }
    return chunk;
  }

  std::vector<std::byte> a_ = std::vector<std::byte>(24);
  std::vector<std::byte> b_ = std::vector<std::byte>(24);
  std::vector<std::byte> c_ = std::vector<std::byte>(80);
  plan::SavePlan plan;
  std::vector<std::byte> expected;
  std::vector<std::uint64_t> starts;
};

TEST(HostCopier, NameAndDevices) {
  ManualExecutor manual;
  auto copier = make_host_copier(manual.executor());
  EXPECT_EQ(copier->name(), "host");
  EXPECT_TRUE(copier->handles(Device{DeviceKind::cpu}));
  EXPECT_FALSE(copier->handles(Device{DeviceKind::cuda, 0}));
  EXPECT_FALSE(copier->handles(Device{DeviceKind::meta}));
  EXPECT_THROW(make_host_copier(Executor{}), Error);
}

TEST(HostCopier, OneChunkWithHeaderAndTensorsIsByteExact) {
  Fixture f;
  ManualExecutor manual;
  auto copier = make_host_copier(manual.executor());
  const plan::Chunk chunk = f.chunk(0, f.expected.size());
  ASSERT_EQ(chunk.segments.size(), 4u);
  std::vector<std::byte> out(chunk.length, std::byte{0xEE});
  int calls = 0;
  std::exception_ptr error;
  copier->copy_chunk(f.plan, chunk, out.data(), [&](std::exception_ptr e) {
    ++calls;
    error = e;
  });
  // Nothing happens on the caller's thread: one task is posted and the buffer is untouched.
  EXPECT_EQ(manual.pending(), 1u);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(out[0], std::byte{0xEE});
  manual.run_all();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(error, nullptr);
  EXPECT_EQ(out, f.expected);
}

TEST(HostCopier, ChunksCutAnywhereReassembleTheFile) {
  Fixture f;
  ManualExecutor manual;
  auto copier = make_host_copier(manual.executor());
  std::mt19937_64 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::uint64_t> cuts{0, f.expected.size()};
    for (int i = 0; i < 6; ++i) cuts.push_back(rng() % (f.expected.size() + 1));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    std::vector<plan::Chunk> chunks;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i) chunks.push_back(f.chunk(cuts[i], cuts[i + 1]));
    std::vector<std::byte> out(f.expected.size());
    int ok = 0;
    for (const auto& chunk : chunks) {
      copier->copy_chunk(f.plan, chunk, out.data() + chunk.file_offset, [&](std::exception_ptr e) {
        EXPECT_EQ(e, nullptr);
        ++ok;
      });
    }
    EXPECT_EQ(manual.pending(), chunks.size()) << "one task per chunk";
    manual.run_all();
    EXPECT_EQ(ok, static_cast<int>(chunks.size()));
    ASSERT_EQ(out, f.expected) << "round " << round;
  }
}

TEST(HostCopier, RunsOnWorkerThreadsConcurrently) {
  Fixture f;
  std::mutex mutex;
  std::vector<std::thread> workers;
  auto copier = make_host_copier([&](std::function<void()> task) {
    std::lock_guard lock(mutex);
    workers.emplace_back(std::move(task));
  });
  constexpr int kCopies = 16;
  std::vector<std::vector<std::byte>> outs(kCopies, std::vector<std::byte>(f.expected.size()));
  std::vector<std::promise<void>> done(kCopies);
  const plan::Chunk chunk = f.chunk(0, f.expected.size());
  for (int i = 0; i < kCopies; ++i) {
    copier->copy_chunk(f.plan, chunk, outs[i].data(), [&, i](std::exception_ptr e) {
      if (e) {
        done[i].set_exception(e);
      } else {
        done[i].set_value();
      }
    });
  }
  for (auto& d : done) EXPECT_NO_THROW(d.get_future().get());
  for (auto& w : workers) w.join();
  for (const auto& out : outs) EXPECT_EQ(out, f.expected);
}

// Runs one copy_chunk through the manual executor and returns the error `done` saw (checking it ran once).
std::exception_ptr run_one(const plan::SavePlan& plan, const plan::Chunk& chunk, std::byte* dst) {
  ManualExecutor manual;
  auto copier = make_host_copier(manual.executor());
  int calls = 0;
  std::exception_ptr error;
  EXPECT_NO_THROW(copier->copy_chunk(plan, chunk, dst, [&](std::exception_ptr e) {
    ++calls;
    error = e;
  }));
  manual.run_all();
  EXPECT_EQ(calls, 1);
  return error;
}

ErrorCode code_of(std::exception_ptr error) {
  if (!error) {
    ADD_FAILURE() << "no error";
    return ErrorCode::internal;
  }
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.code();
  } catch (...) {
    ADD_FAILURE() << "not a quicksave::Error";
  }
  return ErrorCode::internal;
}

TEST(HostCopier, DeviceTensorErrorArrivesThroughDone) {
  Fixture f;
  f.plan.tensors[1].device = Device{DeviceKind::cuda, 0};
  std::vector<std::byte> out(f.expected.size());
  EXPECT_EQ(code_of(run_one(f.plan, f.chunk(0, f.expected.size()), out.data())), ErrorCode::invalid_argument);
}

TEST(HostCopier, MalformedChunksAreErrorsNotOverruns) {
  Fixture f;
  std::vector<std::byte> out(f.expected.size() + 64, std::byte{0x5A});
  plan::Chunk chunk = f.chunk(0, 40);
  chunk.length = 39;  // segments no longer sum to the length: nothing may be written
  EXPECT_EQ(code_of(run_one(f.plan, chunk, out.data())), ErrorCode::invalid_argument);
  EXPECT_EQ(out[0], std::byte{0x5A});

  chunk = f.chunk(0, 40);
  chunk.segments[1].tensor = 7;  // no such tensor
  EXPECT_EQ(code_of(run_one(f.plan, chunk, out.data())), ErrorCode::invalid_argument);

  chunk = f.chunk(0, 40);
  chunk.segments[0].source_offset = 5;  // header range past the header's end
  EXPECT_EQ(code_of(run_one(f.plan, chunk, out.data())), ErrorCode::invalid_argument);

  chunk = f.chunk(0, 40);
  chunk.file = 3;  // no such file for the header segment
  EXPECT_EQ(code_of(run_one(f.plan, chunk, out.data())), ErrorCode::invalid_argument);

  chunk = f.chunk(0, 40);
  EXPECT_EQ(code_of(run_one(f.plan, chunk, nullptr)), ErrorCode::invalid_argument);
}

TEST(HostCopier, EmptyChunkSucceeds) {
  Fixture f;
  plan::Chunk chunk;
  EXPECT_EQ(run_one(f.plan, chunk, nullptr), nullptr);
}

TEST(HostCopier, ExecutorFailureIsReportedOnceWithoutThrowing) {
  Fixture f;
  auto copier = make_host_copier([](std::function<void()>) { throw Error(ErrorCode::cancelled, "executor stopped"); });
  int calls = 0;
  std::exception_ptr error;
  std::vector<std::byte> out(f.expected.size());
  EXPECT_NO_THROW(copier->copy_chunk(f.plan, f.chunk(0, f.expected.size()), out.data(), [&](std::exception_ptr e) {
    ++calls;
    error = e;
  }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(code_of(error), ErrorCode::cancelled);
}

TEST(HostCopier, ExecutorThatRunsTheTaskThenThrowsStillCompletesOnce) {
  Fixture f;
  auto copier = make_host_copier([](std::function<void()> task) {
    task();
    throw Error(ErrorCode::internal, "late executor failure");
  });
  int calls = 0;
  std::exception_ptr error;
  std::vector<std::byte> out(f.expected.size());
  EXPECT_NO_THROW(copier->copy_chunk(f.plan, f.chunk(0, f.expected.size()), out.data(), [&](std::exception_ptr e) {
    ++calls;
    error = e;
  }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(error, nullptr);
  EXPECT_EQ(out, f.expected);
}

}  // namespace
}  // namespace quicksave::stage
