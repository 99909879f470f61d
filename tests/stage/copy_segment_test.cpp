// stage::copy_segment against a deliberately naive reference: the C-order image computed element by
// element from each element's multi-index. Every layout is checked whole and cut into random
// pieces (including cuts inside elements), so the gather's start-anywhere odometer, its partial
// elements and its fast paths are all compared with the same oracle.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "quicksave/tensor_ref.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave {
namespace {

// A host buffer filled with bytes that differ from their neighbours, viewed by TensorRefs.
struct Storage {
  explicit Storage(std::size_t bytes, unsigned seed = 1) : bytes(bytes) {
    std::mt19937 rng(seed);
    for (auto& b : this->bytes) b = static_cast<std::byte>(rng());
  }
  std::vector<std::byte> bytes;
};

TensorRef view(const Storage& storage, DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> strides,
               std::uint64_t offset_elements = 0) {
  TensorRef t;
  t.name = "t";
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.strides = std::move(strides);
  t.storage_base = storage.bytes.data();
  t.storage_nbytes = storage.bytes.size();
  t.data = storage.bytes.data() + offset_elements * static_cast<std::uint64_t>(dtype_bits(dtype) / 8);
  return t;
}

std::vector<std::int64_t> c_strides(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size());
  std::int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

// The oracle: element i of the C-order image, from its multi-index, independently of the code under test.
std::vector<std::byte> reference_image(const TensorRef& t) {
  const std::size_t e = static_cast<std::size_t>(dtype_bits(t.dtype) / 8);
  const std::vector<std::int64_t> strides = t.strides.empty() ? c_strides(t.shape) : t.strides;
  std::uint64_t numel = 1;
  for (auto d : t.shape) numel *= static_cast<std::uint64_t>(d);
  std::vector<std::byte> image(numel * e);
  const auto* base = static_cast<const std::byte*>(t.data);
  for (std::uint64_t i = 0; i < numel; ++i) {
    std::uint64_t rest = i;
    std::int64_t offset = 0;
    for (std::size_t d = t.shape.size(); d-- > 0;) {
      offset += static_cast<std::int64_t>(rest % static_cast<std::uint64_t>(t.shape[d])) * strides[d];
      rest /= static_cast<std::uint64_t>(t.shape[d]);
    }
    std::copy_n(base + offset * static_cast<std::int64_t>(e), e, image.begin() + static_cast<std::ptrdiff_t>(i * e));
  }
  return image;
}

// Copies the image in pieces cut at `cuts` (sorted, within [0, size]) into a buffer guarded by
// canary bytes on both sides, and checks both the bytes and that nothing outside was written.
void expect_pieces_match(const TensorRef& t, const std::vector<std::byte>& expected, std::vector<std::uint64_t> cuts) {
  constexpr std::size_t kGuard = 16;
  const std::uint64_t size = expected.size();
  cuts.push_back(0);
  cuts.push_back(size);
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::byte> out(size + 2 * kGuard, std::byte{0xA5});
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    stage::copy_segment(t, cuts[i], cuts[i + 1] - cuts[i], out.data() + kGuard + cuts[i]);
  }
  for (std::size_t i = 0; i < kGuard; ++i) {
    ASSERT_EQ(out[i], std::byte{0xA5}) << "wrote before the destination";
    ASSERT_EQ(out[kGuard + size + i], std::byte{0xA5}) << "wrote past the destination";
  }
  const std::vector<std::byte> got(out.begin() + kGuard, out.begin() + static_cast<std::ptrdiff_t>(kGuard + size));
  if (got != expected) {
    std::size_t first = 0;
    while (got[first] == expected[first]) ++first;
    FAIL() << "first differing byte at " << first << " of " << size;
  }
}

// Whole image at once, every single byte on its own (small tensors), and random piece splits.
void check_layout(const TensorRef& t, unsigned seed) {
  SCOPED_TRACE("dtype=" + std::string(dtype_name(t.dtype)) + " shape=" + ::testing::PrintToString(t.shape) +
               " strides=" + ::testing::PrintToString(t.strides));
  const std::vector<std::byte> expected = reference_image(t);
  ASSERT_EQ(expected.size(), t.nbytes());
  expect_pieces_match(t, expected, {});
  if (expected.size() <= 512) {
    std::vector<std::uint64_t> every(expected.size());
    std::iota(every.begin(), every.end(), 0);
    expect_pieces_match(t, expected, every);
  }
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::uint64_t> cuts;
    const int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) cuts.push_back(expected.empty() ? 0 : rng() % (expected.size() + 1));
    expect_pieces_match(t, expected, cuts);
  }
}

const DType kDTypes[] = {DType::U8, DType::BOOL, DType::F16, DType::BF16, DType::F32, DType::I32,
                         DType::F64, DType::C64, DType::I64};

std::size_t element_bytes(DType d) { return static_cast<std::size_t>(dtype_bits(d) / 8); }

TEST(CopySegment, ZeroDimensional) {
  for (DType d : kDTypes) {
    Storage s(element_bytes(d));
    check_layout(view(s, d, {}, {}), 1);
  }
}

TEST(CopySegment, EmptyTensorsCopyNothing) {
  for (DType d : kDTypes) {
    Storage s(64);
    const TensorRef t = view(s, d, {3, 0, 4}, {1, 12, 3});
    EXPECT_EQ(t.nbytes(), 0u);
    check_layout(t, 2);
    std::byte sink{};
    EXPECT_THROW(stage::copy_segment(t, 0, 1, &sink), Error);
  }
}

TEST(CopySegment, ZeroLengthIsANoOpEvenForUnreadableTensors) {
  TensorRef t;
  t.device = Device{DeviceKind::cuda, 0};
  t.strides = {-1};
  t.shape = {4};
  EXPECT_NO_THROW(stage::copy_segment(t, 0, 0, nullptr));
}

TEST(CopySegment, OneDimensionalWithStep) {
  for (DType d : kDTypes) {
    Storage s(30 * element_bytes(d));
    check_layout(view(s, d, {10}, {3}), 3);      // A[::3]
    check_layout(view(s, d, {9}, {3}, 2), 4);    // A[2::3]
    check_layout(view(s, d, {15}, {2}, 1), 5);   // A[1::2]
  }
}

TEST(CopySegment, TwoDimensionalTranspose) {
  for (DType d : kDTypes) {
    Storage s(5 * 7 * element_bytes(d));
    check_layout(view(s, d, {7, 5}, {1, 7}), 6);  // (5, 7).T
    Storage big(64 * 48 * element_bytes(d), 9);
    check_layout(view(big, d, {48, 64}, {1, 48}), 7);
  }
}

TEST(CopySegment, SlicedSubmatrices) {
  for (DType d : kDTypes) {
    Storage s(8 * 9 * element_bytes(d));
    check_layout(view(s, d, {6, 4}, {9, 2}, 10), 8);  // A[1:7, 1:9:2]
    check_layout(view(s, d, {3, 9}, {18, 1}, 9), 9);  // A[1::2]: rows dense, outer strided
    check_layout(view(s, d, {4, 6}, {1, 9}, 2), 10);  // A[:6, 2:6].T
  }
}

TEST(CopySegment, ThreeDimensionalPermutations) {
  const std::vector<std::int64_t> shape{3, 4, 5};
  const std::vector<std::int64_t> strides = c_strides(shape);
  for (DType d : kDTypes) {
    Storage s(60 * element_bytes(d));
    std::vector<int> perm{0, 1, 2};
    unsigned seed = 11;
    do {
      check_layout(view(s, d, {shape[perm[0]], shape[perm[1]], shape[perm[2]]},
                        {strides[perm[0]], strides[perm[1]], strides[perm[2]]}),
                   seed++);
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST(CopySegment, FourDimensionalPermutationWithSizeOneDimensions) {
  const std::vector<std::int64_t> shape{5, 1, 6, 7, 8};
  const std::vector<std::int64_t> strides = c_strides(shape);
  for (DType d : {DType::U8, DType::F16, DType::F32, DType::F64}) {
    Storage s(5 * 6 * 7 * 8 * element_bytes(d));
    std::vector<int> perm{0, 1, 2, 3, 4};
    std::mt19937 rng(12);
    for (int round = 0; round < 6; ++round) {
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<std::int64_t> sh, st;
      for (int p : perm) {
        sh.push_back(shape[p]);
        st.push_back(p == 1 ? 12345 : strides[p]);  // a size-1 dimension's stride is irrelevant
      }
      check_layout(view(s, d, sh, st), 100 + round);
    }
  }
}

TEST(CopySegment, StrideZeroExpand) {
  for (DType d : kDTypes) {
    Storage s(6 * 5 * element_bytes(d));
    check_layout(view(s, d, {4, 6}, {0, 1}), 13);        // row vector expanded to 4 rows
    check_layout(view(s, d, {6, 4}, {1, 0}), 14);        // column vector expanded to 4 columns
    check_layout(view(s, d, {3, 4, 5}, {5, 0, 1}), 15);  // middle dimension expanded
    check_layout(view(s, d, {7, 3}, {0, 0}), 16);        // a scalar expanded
    check_layout(view(s, d, {2, 40}, {1, 0}), 17);       // long broadcast runs
  }
}

TEST(CopySegment, LargeTransposeInPieces) {
  // Big enough that runs span many rows and pieces start in the middle of rows and of elements.
  Storage s(300 * 257 * 4, 21);
  const TensorRef t = view(s, DType::F32, {257, 300}, {1, 257});
  const std::vector<std::byte> expected = reference_image(t);
  std::mt19937_64 rng(22);
  for (int round = 0; round < 5; ++round) {
    std::vector<std::uint64_t> cuts;
    for (int i = 0; i < 50; ++i) cuts.push_back(rng() % (expected.size() + 1));
    expect_pieces_match(t, expected, cuts);
  }
}

TEST(CopySegment, BlockedTransposesAcrossBandsAndOuterDimensions) {
  // Transposes taller than one band (256 rows) with sizes that leave partial tiles, and 3-D
  // permutations whose dense dimension is the middle one, so bands end at the middle dimension's
  // end and carry into the outer one.
  for (DType d : {DType::U8, DType::F16, DType::F32, DType::C64}) {
    const std::size_t e = element_bytes(d);
    Storage s(70 * 601 * e, 31);
    check_layout(view(s, d, {601, 70}, {1, 601}), 32);
    check_layout(view(s, d, {600, 70}, {1, 601}, 1), 33);  // a slice of it: row stride != row length
    // Storage (A=70, B=3, C=200) viewed as (B, C, A): strides (200, 1, 600).
    Storage t(70 * 3 * 200 * e, 34);
    check_layout(view(t, d, {3, 200, 70}, {200, 1, 600}), 35);
    // Expanded rows (row stride 0) next to a strided inner dimension.
    check_layout(view(s, d, {300, 70}, {0, 601}), 36);
  }
}

TEST(CopySegment, ContiguousFastPathCopiesTheRawBytes) {
  Storage s(4096 + 8, 23);
  for (const std::vector<std::int64_t>& strides : {std::vector<std::int64_t>{}, std::vector<std::int64_t>{64, 1}}) {
    const TensorRef t = view(s, DType::F64, {8, 64}, strides, 1);
    for (std::uint64_t off : {0ull, 1ull, 7ull, 100ull, 4095ull}) {
      const std::uint64_t len = std::min<std::uint64_t>(1000, 4096 - off);
      std::vector<std::byte> out(len);
      stage::copy_segment(t, off, len, out.data());
      EXPECT_TRUE(std::equal(out.begin(), out.end(), s.bytes.begin() + 8 + static_cast<std::ptrdiff_t>(off)));
    }
    check_layout(t, 24);
  }
  // Size-1 dimensions with arbitrary strides are still contiguous.
  const TensorRef t = view(s, DType::F32, {1, 16, 1}, {999, 1, 77});
  check_layout(t, 25);
}

TEST(CopySegment, ContiguousSubByteDTypes) {
  Storage s(32, 26);
  TensorRef t = view(s, DType::F4, {2, 16}, {16, 1});  // 32 nibbles = 16 bytes
  ASSERT_EQ(t.nbytes(), 16u);
  std::vector<std::byte> out(16);
  stage::copy_segment(t, 0, 16, out.data());
  EXPECT_TRUE(std::equal(out.begin(), out.end(), s.bytes.begin()));
  stage::copy_segment(t, 5, 3, out.data());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 3, s.bytes.begin() + 5));
}

ErrorCode code_of(const TensorRef& t, std::uint64_t offset, std::uint64_t length) {
  std::vector<std::byte> out(length + 1);
  try {
    stage::copy_segment(t, offset, length, out.data());
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "copy_segment did not throw";
  return ErrorCode::internal;
}

TEST(CopySegment, RejectsNonHostTensors) {
  Storage s(64);
  TensorRef t = view(s, DType::F32, {4}, {});
  t.device = Device{DeviceKind::cuda, 0};
  EXPECT_EQ(code_of(t, 0, 4), ErrorCode::invalid_argument);
  t.device = Device{DeviceKind::meta};
  EXPECT_EQ(code_of(t, 0, 4), ErrorCode::invalid_argument);
}

TEST(CopySegment, RejectsNegativeStrides) {
  Storage s(64);
  const TensorRef t = view(s, DType::F32, {4}, {-1}, 3);
  EXPECT_EQ(code_of(t, 0, 4), ErrorCode::invalid_argument);
}

TEST(CopySegment, RejectsStridedSubByteDTypes) {
  Storage s(64);
  EXPECT_EQ(code_of(view(s, DType::F4, {4, 8}, {1, 4}), 0, 4), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of(view(s, DType::F6_E2M3, {4, 8}, {1, 4}), 0, 4), ErrorCode::invalid_argument);
}

TEST(CopySegment, RejectsRangesOutsideTheImage) {
  Storage s(64);
  const TensorRef t = view(s, DType::F32, {4, 2}, {1, 4});
  EXPECT_EQ(code_of(t, 0, 33), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of(t, 32, 1), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of(t, UINT64_MAX, 2), ErrorCode::invalid_argument);
}

TEST(CopySegment, RejectsMalformedLayouts) {
  Storage s(64);
  EXPECT_EQ(code_of(view(s, DType::F32, {4, 2}, {1}), 0, 4), ErrorCode::invalid_argument);  // stride count
  // Strides reaching past the storage the tensor claims to view.
  EXPECT_EQ(code_of(view(s, DType::F32, {4, 2}, {1, 16}), 0, 4), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of(view(s, DType::F32, {16}, {}, 1), 0, 4), ErrorCode::invalid_argument);
  EXPECT_EQ(code_of(view(s, DType::F32, {2, 2}, {INT64_MAX / 2, 1}), 0, 4), ErrorCode::invalid_argument);
  TensorRef no_data = view(s, DType::F32, {4}, {});
  no_data.data = nullptr;
  no_data.storage_base = nullptr;
  EXPECT_EQ(code_of(no_data, 0, 4), ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace quicksave
