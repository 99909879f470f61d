// The distributed save without LibTorch or processes: ranks are threads, each with its own
// Checkpointer and a StoreCoordinator over one in-memory store. Checks that the assignment covers
// every byte exactly once, that the files equal a single-process save of the union, and that a
// failing or silent rank publishes nothing and is named in every rank's error.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <thread>

#include "dist/assignment.hpp"
#include "dist/in_memory_store.hpp"
#include "commit/checkpoint_fixture.hpp"
#include "engine/checkpointer_access.hpp"
#include "io/fault_backend.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using testing::read_file;

// Rank r holds tensors "r<r>.<i>", of varied sizes and dtypes.
std::vector<TensorRef> rank_tensors(int rank, int count, std::vector<std::shared_ptr<std::vector<unsigned char>>>& keep) {
  std::mt19937 rng(100 + rank);
  std::vector<TensorRef> out;
  for (int i = 0; i < count; ++i) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 50000);
    auto buffer = std::make_shared<std::vector<unsigned char>>(static_cast<std::size_t>(n) * 2);
    for (auto& c : *buffer) c = static_cast<unsigned char>(rng());
    keep.push_back(buffer);
    TensorRef t{.name = "r" + std::to_string(rank) + "." + std::to_string(i), .dtype = DType::BF16, .shape = {n}};
    t.data = t.storage_base = buffer->data();
    t.storage_nbytes = buffer->size();
    t.keepalive = buffer;
    out.push_back(t);
  }
  return out;
}

// The plan every rank computes: its own tensors real, the others' as remote stand-ins.
struct PartitionedPlan {
  plan::SavePlan plan;
  std::vector<int> tensor_rank;
};

PartitionedPlan partitioned_plan(const std::vector<std::vector<TensorRef>>& per_rank, int me, const SaveOptions& options,
                                 std::uint64_t chunk) {
  std::vector<TensorRef> global;
  std::vector<int> tensor_rank;
  for (std::size_t r = 0; r < per_rank.size(); ++r) {
    for (const auto& t : per_rank[r]) {
      TensorRef ref = t;
      if (static_cast<int>(r) != me) ref = TensorRef{.name = t.name, .dtype = t.dtype, .shape = t.shape};
      global.push_back(ref);
      tensor_rank.push_back(static_cast<int>(r));
    }
  }
  return {plan::make_save_plan(global, options, chunk, true), tensor_rank};
}

TEST(DistAssignment, EveryByteIsWrittenByExactlyOneRank) {
  std::vector<std::shared_ptr<std::vector<unsigned char>>> keep;
  for (int world : {1, 2, 3, 4}) {
    std::vector<std::vector<TensorRef>> per_rank;
    for (int r = 0; r < world; ++r) per_rank.push_back(rank_tensors(r, 7, keep));
    SaveOptions options;
    options.max_shard_size = 150000;
    const auto global = partitioned_plan(per_rank, 0, options, 64 * 1024);
    std::vector<std::vector<int>> writers(global.plan.files.size());
    for (std::size_t f = 0; f < global.plan.files.size(); ++f) writers[f].assign(global.plan.files[f].file_bytes, 0);
    for (int r = 0; r < world; ++r) {
      const auto mine = partitioned_plan(per_rank, r, options, 64 * 1024);
      const auto a = dist::assign_partitioned(mine.plan, mine.tensor_rank, r);
      for (const auto& chunk : a.chunks) {
        EXPECT_LE(chunk.length, 64u * 1024);
        for (std::uint64_t b = chunk.file_offset; b < chunk.file_offset + chunk.length; ++b) ++writers[chunk.file][b];
      }
    }
    for (const auto& file : writers) {
      for (const int count : file) ASSERT_EQ(count, 1);
    }
    const auto ranks = dist::replicated_file_ranks(global.plan, world);
    std::vector<std::uint64_t> load(static_cast<std::size_t>(world), 0);
    for (std::size_t f = 0; f < ranks.size(); ++f) load[static_cast<std::size_t>(ranks[f])] += global.plan.files[f].file_bytes;
    const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
    std::uint64_t biggest = 0;
    for (const auto& f : global.plan.files) biggest = std::max(biggest, f.file_bytes);
    EXPECT_LE(*hi - *lo, biggest);  // greedy balancing is within one file of even
  }
}

struct RankResult {
  std::exception_ptr error;
  bool staged = false;
};

enum class Layout { replicated, partitioned };

std::vector<RankResult> run_ranks(int world, Layout layout, const fs::path& dir, const std::vector<std::vector<TensorRef>>& per_rank,
                                  const SaveOptions& options, int faulty_rank = -1, int silent_rank = -1) {
  auto store = std::make_shared<testing::InMemoryStore>();
  std::vector<RankResult> results(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      CheckpointerOptions copts;
      copts.chunk_bytes = 64 * 1024;
      copts.pinned_budget_bytes = 8 * 64 * 1024;
      std::unique_ptr<io::IoBackend> backend = io::make_posix_backend(2);
      if (r == faulty_rank) {
        backend = std::make_unique<io::FaultBackend>(std::move(backend), io::FaultSpec{.op = io::FaultOp::write, .kind = io::FaultKind::eio, .nth = 2});
      }
      Checkpointer ckpt = CheckpointerAccess::make(copts, std::move(backend));
      plan::SavePlan plan;
      engine::Assignment assignment;
      std::vector<int> owners;
      if (layout == Layout::replicated) {
        std::vector<TensorRef> all;
        for (const auto& part : per_rank) all.insert(all.end(), part.begin(), part.end());
        plan = plan::make_save_plan(all, options, copts.chunk_bytes);
        owners = dist::replicated_file_ranks(plan, world);
        assignment = dist::assign_replicated(plan, r, world);
      } else {
        auto p = partitioned_plan(per_rank, r, options, copts.chunk_bytes);
        owners = dist::partitioned_file_owners(p.plan, p.tensor_rank);
        assignment = dist::assign_partitioned(p.plan, p.tensor_rank, r);
        plan = std::move(p.plan);
      }
      if (r == silent_rank) return;  // a rank that died before saving: never reports anything
      dist::CoordinatorConfig config{store, "save/0", r, world, std::chrono::milliseconds(1500), owners};
      SaveHandle handle = CheckpointerAccess::submit(ckpt, std::move(plan), dir, SaveOptions{}, dist::make_store_coordinator(config, std::move(assignment)));
      try {
        handle.staged().get();
        results[r].staged = true;
      } catch (...) {
      }
      try {
        handle.committed().get();
      } catch (...) {
        results[r].error = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

class DistProtocol : public ::testing::TestWithParam<std::tuple<int, Layout>> {};

TEST_P(DistProtocol, FilesEqualASingleProcessSaveOfTheUnion) {
  const auto [world, layout] = GetParam();
  std::vector<std::shared_ptr<std::vector<unsigned char>>> keep;
  std::vector<std::vector<TensorRef>> per_rank;
  for (int r = 0; r < world; ++r) per_rank.push_back(rank_tensors(r, 6, keep));
  SaveOptions options;
  options.max_shard_size = 120000;
  TempDir tmp;
  const auto results = run_ranks(world, layout, tmp.path() / "dist", per_rank, options);
  for (int r = 0; r < world; ++r) EXPECT_FALSE(results[r].error) << "rank " << r;
  std::vector<TensorRef> all;
  for (const auto& part : per_rank) all.insert(all.end(), part.begin(), part.end());
  save_state_dict(all, tmp.path() / "single", options);
  EXPECT_GT(testing::expect_same_files(tmp.path() / "single", tmp.path() / "dist"), 2);
  EXPECT_FALSE(testing::has_leftovers(tmp.path() / "dist"));
}

INSTANTIATE_TEST_SUITE_P(Worlds, DistProtocol,
                         ::testing::Combine(::testing::Values(1, 2, 4), ::testing::Values(Layout::replicated, Layout::partitioned)),
                         [](const auto& info) {
                           return std::to_string(std::get<0>(info.param)) + "_ranks_" +
                                  (std::get<1>(info.param) == Layout::replicated ? "replicated" : "partitioned");
                         });

TEST(DistProtocolFailure, OneRankFailingPublishesNothingAndIsNamedEverywhere) {
  for (const Layout layout : {Layout::replicated, Layout::partitioned}) {
    std::vector<std::shared_ptr<std::vector<unsigned char>>> keep;
    std::vector<std::vector<TensorRef>> per_rank;
    for (int r = 0; r < 3; ++r) per_rank.push_back(rank_tensors(r, 6, keep));
    SaveOptions options;
    options.max_shard_size = 120000;
    TempDir tmp;
    const auto results = run_ranks(3, layout, tmp.path() / "dist", per_rank, options, /*faulty_rank=*/1);
    for (int r = 0; r < 3; ++r) {
      ASSERT_TRUE(results[r].error) << "rank " << r << " succeeded";
      try {
        std::rethrow_exception(results[r].error);
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(r == 1 ? "Input/output error" : "rank 1:"), std::string::npos) << e.what();
      }
    }
    EXPECT_FALSE(fs::exists(tmp.path() / "dist"));  // nothing published, not even the directory
    for (const auto& e : fs::directory_iterator(tmp.path())) ADD_FAILURE() << "leftover " << e.path();
  }
}

TEST(DistProtocolFailure, ASilentRankMakesTheOthersTimeOut) {
  std::vector<std::shared_ptr<std::vector<unsigned char>>> keep;
  std::vector<std::vector<TensorRef>> per_rank;
  for (int r = 0; r < 3; ++r) per_rank.push_back(rank_tensors(r, 4, keep));
  TempDir tmp;
  const auto results = run_ranks(3, Layout::partitioned, tmp.path() / "dist", per_rank, SaveOptions{}, -1, /*silent_rank=*/2);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].error);
    try {
      std::rethrow_exception(results[r].error);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unavailable);
      EXPECT_NE(std::string(e.what()).find("rank 2 stopped responding"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "dist" / "model.safetensors"));
}

}  // namespace
}  // namespace quicksave
