// The staging kernels on a GPU: pack_strided against the host path's strided gather
// (stage::copy_segment) for random views of every element size, rank up to 8 (10 with size-1
// dimensions), stride-0 and overlapping strides, byte ranges cut inside elements and misaligned
// destinations; gather with thousands of tiny pieces of every alignment in a few launches; and
// the launchers' argument checks and error reporting, which need no device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "gpu_test_util.hpp"
#include "kernels/cuda_error.hpp"
#include "kernels/staging_kernels.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "stage/copy_segment.hpp"

namespace quicksave::kernels {
namespace {

using gputest::device_alloc;

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::internal;
}

// ---- no device needed ------------------------------------------------------------------------

TEST(GpuKernels, LaunchersCheckTheirArgumentsBeforeAnyCudaCall) {
  StridedView v;
  v.data = reinterpret_cast<void*>(256);
  v.rank = 1;
  v.shape[0] = 8;
  v.strides[0] = 2;
  v.element_bytes = 4;
  EXPECT_EQ(code_of([&] { pack_strided(v, 0, 64, reinterpret_cast<void*>(256), nullptr); }), ErrorCode::invalid_argument);
  v.element_bytes = 5;
  EXPECT_EQ(code_of([&] { pack_strided(v, 0, 4, reinterpret_cast<void*>(256), nullptr); }), ErrorCode::invalid_argument);
  v.element_bytes = 4;
  EXPECT_NO_THROW(pack_strided(v, 32, 0, nullptr, nullptr));  // nothing to do, nothing launched
  const GatherEntry bad[] = {{nullptr, 0, 16}};
  EXPECT_EQ(code_of([&] { gather(bad, 1, reinterpret_cast<void*>(256), nullptr); }), ErrorCode::invalid_argument);
  EXPECT_NO_THROW(gather(nullptr, 0, nullptr, nullptr));
}

TEST(GpuKernels, CudaErrorsNameTheCallAndTheError) {
  const Error oom = cuda_error(cudaErrorMemoryAllocation, "cudaMalloc", "bytes=8388608");
  EXPECT_EQ(oom.code(), ErrorCode::unavailable);
  EXPECT_NE(std::string(oom.what()).find("cudaMalloc: cudaErrorMemoryAllocation"), std::string::npos) << oom.what();
  EXPECT_NE(std::string(oom.what()).find("bytes=8388608"), std::string::npos) << oom.what();
  const Error fault = cuda_error(cudaErrorIllegalAddress, "cudaMemcpyAsync");
  EXPECT_EQ(fault.code(), ErrorCode::internal);
  EXPECT_NE(std::string(fault.what()).find("cudaMemcpyAsync: cudaErrorIllegalAddress"), std::string::npos);
  EXPECT_EQ(cuda_error(cudaErrorNoDevice, "cudaGetDeviceCount").code(), ErrorCode::unavailable);
  EXPECT_EQ(cuda_error(cudaErrorInsufficientDriver, "cudaGetDeviceCount").code(), ErrorCode::unavailable);
  EXPECT_EQ(cuda_error(cudaErrorNoKernelImageForDevice, "cudaLaunchKernel").code(), ErrorCode::unavailable);
  EXPECT_NO_THROW(cuda_check(cudaSuccess, "nothing"));
  EXPECT_THROW(cuda_check(cudaErrorInvalidValue, "cudaMemcpyAsync"), Error);
}

// ---- on a device -----------------------------------------------------------------------------

class StreamFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    QS_REQUIRE_GPU();
    QS_CUDA_OK(cudaSetDevice(0));
    QS_CUDA_OK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

DType dtype_of_size(int element_bytes) {
  switch (element_bytes) {
    case 1: return DType::I8;
    case 2: return DType::BF16;
    case 4: return DType::I32;
    default: return DType::F64;
  }
}

using GpuPack = StreamFixture;

TEST_F(GpuPack, MatchesTheHostGatherForRandomViewsAndRanges) {
  std::mt19937 rng(7);
  const int sizes[] = {1, 2, 4, 8};
  for (int iteration = 0; iteration < 400; ++iteration) {
    const int e = sizes[iteration % 4];
    const int rank = static_cast<int>(rng() % 11);
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;
    for (int d = 0; d < rank; ++d) {
      std::int64_t size = rng() % 4 == 0 ? 1 : 1 + static_cast<std::int64_t>(rng() % (rank > 5 ? 3 : 12));
      if (rank > 8 && d < rank - 8) size = 1;
      shape.push_back(size);
      strides.push_back(rng() % 6 == 0 ? 0 : static_cast<std::int64_t>(rng() % 50));
    }
    std::uint64_t last = 0;
    for (int d = 0; d < rank; ++d) last += static_cast<std::uint64_t>(shape[d] - 1) * static_cast<std::uint64_t>(strides[d]);
    const std::size_t offset = (rng() % 3) * static_cast<std::size_t>(e) + (iteration % 7 == 0 ? 1 : 0);  // misaligned too
    std::vector<unsigned char> storage(offset + (last + 1) * static_cast<std::size_t>(e));
    for (auto& b : storage) b = static_cast<unsigned char>(rng());
    auto device_storage = device_alloc(0, storage.size());
    QS_CUDA_OK(cudaMemcpy(device_storage.get(), storage.data(), storage.size(), cudaMemcpyHostToDevice));

    TensorRef t;
    t.name = "v";
    t.dtype = dtype_of_size(e);
    t.shape = shape;
    t.strides = strides;
    t.data = storage.data() + offset;
    const std::uint64_t nbytes = t.nbytes();
    const std::uint64_t begin = nbytes == 0 ? 0 : rng() % (nbytes + 1);
    const std::uint64_t length = nbytes == begin ? 0 : rng() % (nbytes - begin + 1);
    std::vector<unsigned char> expected(length);
    stage::copy_segment(t, begin, length, reinterpret_cast<std::byte*>(expected.data()));

    const StridedView view =
        make_strided_view(device_storage.get() + offset, shape.size(), shape.data(), strides.data(), e);
    const std::size_t shift = rng() % 8;
    auto out = device_alloc(0, length + shift + 16);
    QS_CUDA_OK(cudaMemsetAsync(out.get(), 0xEE, length + shift + 16, stream_));
    pack_strided(view, begin, length, out.get() + shift, stream_);
    std::vector<unsigned char> back(length + shift + 16);
    QS_CUDA_OK(cudaMemcpyAsync(back.data(), out.get(), back.size(), cudaMemcpyDeviceToHost, stream_));
    QS_CUDA_OK(cudaStreamSynchronize(stream_));
    ASSERT_TRUE(std::equal(expected.begin(), expected.end(), back.begin() + static_cast<std::ptrdiff_t>(shift)))
        << "iteration " << iteration << ", element " << e << ", rank " << rank << ", bytes [" << begin << ", +" << length << ")";
    for (std::size_t i = 0; i < shift; ++i) ASSERT_EQ(back[i], 0xEE);
    for (std::size_t i = shift + length; i < back.size(); ++i) ASSERT_EQ(back[i], 0xEE);
  }
}

TEST_F(GpuPack, TransposesALargeMatrixInPieces) {
  // 1536 x 1024 bf16 seen transposed, packed in 7 ranges that cut elements: the copier's chunks.
  const std::int64_t rows = 1024, cols = 1536;
  std::vector<std::uint16_t> host(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::uint16_t>(i * 2654435761u >> 7);
  auto dev = device_alloc(0, host.size() * 2);
  QS_CUDA_OK(cudaMemcpy(dev.get(), host.data(), host.size() * 2, cudaMemcpyHostToDevice));
  TensorRef t;
  t.dtype = DType::BF16;
  t.shape = {cols, rows};
  t.strides = {1, cols};
  t.data = host.data();
  const std::uint64_t nbytes = t.nbytes();
  std::vector<unsigned char> expected(nbytes);
  stage::copy_segment(t, 0, nbytes, reinterpret_cast<std::byte*>(expected.data()));
  const StridedView view = make_strided_view(dev.get(), 2, t.shape.data(), t.strides.data(), 2);
  auto out = device_alloc(0, nbytes);
  const std::uint64_t piece = nbytes / 7 + 1;
  for (std::uint64_t at = 0; at < nbytes; at += piece) {
    pack_strided(view, at, std::min(piece, nbytes - at), out.get() + at, stream_);
  }
  std::vector<unsigned char> back(nbytes);
  QS_CUDA_OK(cudaMemcpyAsync(back.data(), out.get(), nbytes, cudaMemcpyDeviceToHost, stream_));
  QS_CUDA_OK(cudaStreamSynchronize(stream_));
  EXPECT_TRUE(back == expected);
}

using GpuGather = StreamFixture;

TEST_F(GpuGather, ThousandsOfTinyPiecesInAFewLaunches) {
  std::mt19937 rng(5);
  std::vector<unsigned char> source(4 << 20);
  for (auto& b : source) b = static_cast<unsigned char>(rng());
  auto dev_source = device_alloc(0, source.size());
  QS_CUDA_OK(cudaMemcpy(dev_source.get(), source.data(), source.size(), cudaMemcpyHostToDevice));
  std::vector<GatherEntry> entries;
  std::vector<unsigned char> expected(8 << 20, 0xEE);
  std::uint64_t position = 3;
  for (int i = 0; i < 6000; ++i) {
    const std::uint64_t bytes = 1 + rng() % (i % 50 == 0 ? 20000 : 300);
    const std::uint64_t src = rng() % (source.size() - bytes);
    entries.push_back({dev_source.get() + src, position, bytes});
    std::memcpy(expected.data() + position, source.data() + src, bytes);
    position += bytes + rng() % 5;
  }
  ASSERT_LT(position, expected.size());
  auto out = device_alloc(0, expected.size());
  QS_CUDA_OK(cudaMemsetAsync(out.get(), 0xEE, expected.size(), stream_));
  gather(entries.data(), entries.size(), out.get(), stream_);
  EXPECT_EQ(gather_launches(entries.size()), 3u);  // 6000 pieces, 2040 per launch
  std::vector<unsigned char> back(expected.size());
  QS_CUDA_OK(cudaMemcpyAsync(back.data(), out.get(), back.size(), cudaMemcpyDeviceToHost, stream_));
  QS_CUDA_OK(cudaStreamSynchronize(stream_));
  EXPECT_TRUE(back == expected);
}

}  // namespace
}  // namespace quicksave::kernels
