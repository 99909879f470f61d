// The staging kernels' per-thread arithmetic (kernels/staging_math.hpp), run on the host over
// every thread index of a launch, against stage::copy_segment (the host path's strided gather):
// what pack_strided and gather write, checked on machines without a GPU. The threads of a launch
// write disjoint bytes, so running them one after the other gives what the device gives.
// Also the host-side preparation: argument checks, layout merging and batching.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/staging_kernels.hpp"
#include "kernels/staging_math.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave::kernels {
namespace {

using detail::PackPlan;

template <int E>
void run_pack_threads(const PackPlan& plan) {
  for (std::uint64_t k = 0; k < plan.params.count; ++k) {
    if (plan.index32) {
      detail::pack_element<E, std::uint32_t>(plan.params, k);
    } else {
      detail::pack_element<E, std::uint64_t>(plan.params, k);
    }
  }
}

// What pack_strided would write for `view` bytes [offset, offset+length) into dst.
void emulate_pack(const StridedView& view, std::uint64_t offset, std::uint64_t length, void* dst) {
  const PackPlan plan = detail::make_pack_plan(view, offset, length, dst);
  if (plan.empty) return;
  switch (plan.element_bytes) {
    case 1: run_pack_threads<1>(plan); break;
    case 2: run_pack_threads<2>(plan); break;
    case 4: run_pack_threads<4>(plan); break;
    default: run_pack_threads<8>(plan); break;
  }
}

DType dtype_of_size(int element_bytes) {
  switch (element_bytes) {
    case 1: return DType::U8;
    case 2: return DType::F16;
    case 4: return DType::F32;
    default: return DType::I64;
  }
}

struct RandomView {
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  int element_bytes = 1;
  std::size_t offset_bytes = 0;  // of the first element in the storage
  std::vector<unsigned char> storage;
};

RandomView random_view(std::mt19937& rng) {
  RandomView v;
  const int sizes[] = {1, 2, 4, 8};
  v.element_bytes = sizes[rng() % 4];
  const int rank = static_cast<int>(rng() % 11);  // up to 10: size-1 dimensions bring it to 8 or fewer
  std::uint64_t numel = 1;
  for (int d = 0; d < rank; ++d) {
    std::int64_t size = rng() % 4 == 0 ? 1 : 1 + static_cast<std::int64_t>(rng() % (rank > 5 ? 3 : 9));
    if (rank > 8 && d < rank - 8) size = 1;  // keep at most 8 non-trivial dimensions
    v.shape.push_back(size);
    numel *= static_cast<std::uint64_t>(size);
  }
  // Strides: a permutation of a contiguous layout, or random (0 = expanded, overlapping allowed).
  if (rng() % 2 == 0) {
    std::vector<int> order(rank);
    for (int d = 0; d < rank; ++d) order[d] = d;
    std::shuffle(order.begin(), order.end(), rng);
    v.strides.assign(rank, 0);
    std::int64_t step = 1 + static_cast<std::int64_t>(rng() % 2);  // 2: every other element
    for (int i = rank; i-- > 0;) {
      v.strides[order[i]] = step;
      step *= v.shape[order[i]];
    }
  } else {
    for (int d = 0; d < rank; ++d) v.strides.push_back(rng() % 5 == 0 ? 0 : static_cast<std::int64_t>(rng() % 40));
  }
  std::uint64_t last = 0;
  for (int d = 0; d < rank; ++d) last += static_cast<std::uint64_t>(v.shape[d] - 1) * static_cast<std::uint64_t>(v.strides[d]);
  v.offset_bytes = (rng() % 3) * static_cast<std::size_t>(v.element_bytes);
  v.storage.resize(v.offset_bytes + (last + 1) * static_cast<std::size_t>(v.element_bytes) + 1);
  for (auto& b : v.storage) b = static_cast<unsigned char>(rng());
  (void)numel;
  return v;
}

TensorRef host_ref(const RandomView& v) {
  TensorRef t;
  t.name = "v";
  t.dtype = dtype_of_size(v.element_bytes);
  t.shape = v.shape;
  t.strides = v.strides;
  t.data = v.storage.data() + v.offset_bytes;
  t.storage_base = v.storage.data();
  t.storage_nbytes = v.storage.size();
  return t;
}

TEST(KernelMath, PackMatchesTheHostGather) {
  std::mt19937 rng(11);
  for (int iteration = 0; iteration < 3000; ++iteration) {
    const RandomView v = random_view(rng);
    const TensorRef t = host_ref(v);
    const std::uint64_t nbytes = t.nbytes();
    // A byte range that may start and end inside elements, as chunk boundaries do.
    const std::uint64_t offset = nbytes == 0 ? 0 : rng() % (nbytes + 1);
    const std::uint64_t length = nbytes == offset ? 0 : rng() % (nbytes - offset + 1);
    std::vector<unsigned char> expected(length + 16, 0xEE);
    stage::copy_segment(t, offset, length, reinterpret_cast<std::byte*>(expected.data() + 8));

    const StridedView view = make_strided_view(t.data, t.shape.size(), t.shape.data(), t.strides.data(), v.element_bytes);
    ASSERT_LE(view.rank, kMaxPackRank);
    // Destination at every misalignment.
    const std::size_t shift = rng() % 8;
    std::vector<unsigned char> out(length + 16 + shift, 0xEE);
    emulate_pack(view, offset, length, out.data() + 8 + shift);
    ASSERT_TRUE(std::equal(expected.begin() + 8, expected.begin() + 8 + static_cast<std::ptrdiff_t>(length),
                           out.begin() + 8 + static_cast<std::ptrdiff_t>(shift)))
        << "iteration " << iteration << ", offset " << offset << ", length " << length;
    // Nothing written outside [0, length).
    for (std::size_t i = 0; i < 8 + shift; ++i) ASSERT_EQ(out[i], 0xEE) << iteration;
    for (std::size_t i = 8 + shift + length; i < out.size(); ++i) ASSERT_EQ(out[i], 0xEE) << iteration;
  }
}

TEST(KernelMath, PackUsesSixtyFourBitIndicesPastFourGiElements) {
  // 3 x (2^32 + 5) elements, the inner dimension expanded (stride 0): tiny storage, huge index.
  for (const int e : {1, 2, 4, 8}) {
    std::vector<unsigned char> storage(3 * static_cast<std::size_t>(e));
    for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<unsigned char>(i * 37 + 1);
    TensorRef t;
    t.dtype = dtype_of_size(e);
    t.shape = {3, (std::int64_t{1} << 32) + 5};
    t.strides = {1, 0};
    t.data = t.storage_base = storage.data();
    t.storage_nbytes = storage.size();
    const StridedView view = make_strided_view(t.data, 2, t.shape.data(), t.strides.data(), e);
    const std::uint64_t nbytes = t.nbytes();
    for (const std::uint64_t offset : {nbytes - 1000 - 3, (nbytes / 3) - 7, std::uint64_t{5}}) {
      const std::uint64_t length = 1000;
      const PackPlan plan = detail::make_pack_plan(view, offset, length, storage.data());
      EXPECT_FALSE(plan.index32) << offset;  // a dimension beyond 32 bits
      std::vector<unsigned char> expected(length);
      std::vector<unsigned char> out(length);
      stage::copy_segment(t, offset, length, reinterpret_cast<std::byte*>(expected.data()));
      emulate_pack(view, offset, length, out.data());
      EXPECT_EQ(out, expected) << "element size " << e << ", offset " << offset;
    }
  }
}

TEST(KernelMath, StridedViewsAreMergedAndChecked) {
  const std::int64_t shape[] = {4, 1, 5, 6};
  const std::int64_t contiguous[] = {30, 999, 6, 1};
  StridedView v = make_strided_view(reinterpret_cast<void*>(64), 4, shape, contiguous, 2);
  EXPECT_EQ(v.rank, 1);  // one run of 120 elements
  EXPECT_EQ(v.shape[0], 120);
  EXPECT_EQ(v.strides[0], 1);
  v = make_strided_view(reinterpret_cast<void*>(64), 4, shape, nullptr, 2);
  EXPECT_EQ(v.rank, 1);
  const std::int64_t transposed_shape[] = {6, 5};
  const std::int64_t transposed[] = {1, 6};
  v = make_strided_view(reinterpret_cast<void*>(64), 2, transposed_shape, transposed, 4);
  EXPECT_EQ(v.rank, 2);
  const std::int64_t scalar_shape[] = {1, 1};
  v = make_strided_view(reinterpret_cast<void*>(64), 2, scalar_shape, nullptr, 8);
  EXPECT_EQ(v.rank, 0);

  const std::int64_t nine[] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
  const std::int64_t odd[] = {1, 3, 7, 13, 29, 61, 127, 257, 521};
  EXPECT_THROW(make_strided_view(nullptr, 9, nine, odd, 4), Error);
  const std::int64_t negative[] = {-1, 1};
  EXPECT_THROW(make_strided_view(nullptr, 2, transposed_shape, negative, 4), Error);
  EXPECT_THROW(make_strided_view(nullptr, 2, transposed_shape, transposed, 3), Error);
}

TEST(KernelMath, PackRejectsUnusableArguments) {
  StridedView v;
  v.data = reinterpret_cast<void*>(64);
  v.rank = 1;
  v.shape[0] = 10;
  v.strides[0] = 2;
  v.element_bytes = 4;
  char dst[64];
  EXPECT_NO_THROW(detail::make_pack_plan(v, 0, 40, dst));
  EXPECT_TRUE(detail::make_pack_plan(v, 40, 0, dst).empty);
  auto code = [&](auto f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::internal;
  };
  EXPECT_EQ(code([&] { detail::make_pack_plan(v, 1, 40, dst); }), ErrorCode::invalid_argument);  // past the end
  EXPECT_EQ(code([&] { detail::make_pack_plan(v, 0, 4, nullptr); }), ErrorCode::invalid_argument);
  StridedView bad = v;
  bad.element_bytes = 3;
  EXPECT_EQ(code([&] { detail::make_pack_plan(bad, 0, 3, dst); }), ErrorCode::invalid_argument);
  bad = v;
  bad.rank = 9;
  EXPECT_EQ(code([&] { detail::make_pack_plan(bad, 0, 4, dst); }), ErrorCode::invalid_argument);
  bad = v;
  bad.strides[0] = -1;
  EXPECT_EQ(code([&] { detail::make_pack_plan(bad, 0, 4, dst); }), ErrorCode::invalid_argument);
  bad = v;
  bad.data = nullptr;
  EXPECT_EQ(code([&] { detail::make_pack_plan(bad, 0, 4, dst); }), ErrorCode::invalid_argument);
}

// What gather would write: every piece copied by `threads` threads of its block.
void emulate_gather(const std::vector<GatherEntry>& entries, void* dst, unsigned threads, std::size_t* launches) {
  auto batch = std::make_unique<detail::GatherBatch>();
  std::size_t next = 0;
  *launches = 0;
  while (next < entries.size()) {
    next = detail::fill_gather_batch(entries.data(), entries.size(), next, dst, *batch);
    if (batch->count == 0) continue;
    ++*launches;
    for (std::uint32_t i = 0; i < batch->count; ++i) {
      const detail::GatherPiece& p = batch->pieces[i];
      for (unsigned t = 0; t < threads; ++t) detail::copy_piece(p.src, batch->dst + p.dst_offset, p.bytes, t, threads);
    }
  }
}

TEST(KernelMath, GatherCopiesPiecesOfEveryAlignment) {
  std::mt19937 rng(3);
  std::vector<unsigned char> source(1 << 20);
  for (auto& b : source) b = static_cast<unsigned char>(rng());
  for (const unsigned threads : {256u, 7u, 1u}) {
    std::vector<GatherEntry> entries;
    std::vector<unsigned char> expected(1 << 20, 0xEE);
    std::uint64_t position = rng() % 16;
    for (int i = 0; i < 5000; ++i) {
      const std::uint64_t bytes = rng() % 10 == 0 ? 0 : 1 + rng() % (rng() % 4 == 0 ? 600 : 40);
      const std::uint64_t src = rng() % (source.size() - bytes);
      entries.push_back({source.data() + src, position, bytes});
      std::memcpy(expected.data() + position, source.data() + src, bytes);
      position += bytes + rng() % 3;  // gaps too
      if (position + 700 >= expected.size()) break;
    }
    std::vector<unsigned char> out(expected.size(), 0xEE);
    std::size_t launches = 0;
    emulate_gather(entries, out.data(), threads, &launches);
    EXPECT_EQ(out, expected) << threads << " threads";
    std::size_t nonempty = 0;
    for (const auto& e : entries) nonempty += e.bytes != 0;
    EXPECT_EQ(launches, (nonempty + kGatherEntriesPerLaunch - 1) / kGatherEntriesPerLaunch);
    EXPECT_EQ(gather_launches(nonempty), launches);
  }
}

TEST(KernelMath, GatherRejectsPiecesItCannotAddress) {
  auto batch = std::make_unique<detail::GatherBatch>();
  char dst[16];
  char src[16];
  const std::vector<GatherEntry> null_src = {{nullptr, 0, 4}};
  EXPECT_THROW(detail::fill_gather_batch(null_src.data(), 1, 0, dst, *batch), Error);
  const std::vector<GatherEntry> far = {{src, 0xffffffffull, 4}};
  EXPECT_THROW(detail::fill_gather_batch(far.data(), 1, 0, dst, *batch), Error);
  const std::vector<GatherEntry> empty = {{nullptr, 0, 0}};
  EXPECT_EQ(detail::fill_gather_batch(empty.data(), 1, 0, dst, *batch), 1u);
  EXPECT_EQ(batch->count, 0u);
}

}  // namespace
}  // namespace quicksave::kernels
