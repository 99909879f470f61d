// The Checkpointer on GPU tensors: the files written from device memory (every dtype, strided
// views, tiny and empty tensors, thousands of biases, CPU tensors mixed in, several devices when
// present) equal byte for byte those that save_state_dict writes from host memory holding the same
// values; `staged` means the weights may change; the save waits for work queued on the legacy
// default stream before save_async. Without a device, a save of GPU tensors is refused up front.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "../commit/checkpoint_fixture.hpp"
#include "gpu_test_util.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/save.hpp"

namespace quicksave {
namespace {

using gputest::expect_same_files;
using gputest::TwinStateDict;
using gputest::TwinStorage;
using gputest::varied_state_dict;
using testing::TempDir;

CheckpointerOptions small_options(IoBackendChoice backend = IoBackendChoice::automatic) {
  CheckpointerOptions o;
  o.chunk_bytes = 64 * 1024;
  o.pinned_budget_bytes = 16 * 64 * 1024;  // far less than a save: buffers are reused within it
  o.io_backend = backend;
  o.worker_threads = 3;
  return o;
}

SaveOptions sharded() {
  SaveOptions options;
  options.max_shard_size = ShardSize(std::int64_t{1} << 20);
  return options;
}

TEST(CheckpointerNoGpu, GpuTensorsWithoutADeviceAreRefusedUpFront) {
  if (gputest::missing_devices().empty()) GTEST_SKIP() << "a CUDA device is present: this is the no-device path";
  Checkpointer ckpt(small_options());
  TempDir dir;
  TensorRef t{.name = "w", .dtype = DType::F32, .shape = {4}};
  t.device = Device{DeviceKind::cuda, 0};
  t.data = reinterpret_cast<void*>(4096);
  try {
    (void)ckpt.save_async({t}, dir.path() / "ckpt");
    FAIL() << "a CUDA tensor was accepted without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  // CPU saves still work in this CUDA build.
  testing::SyntheticStateDict cpu(1, 3, 1000);
  EXPECT_NO_THROW(ckpt.save(cpu.tensors, dir.path() / "cpu"));
}

TEST(CheckpointerNoGpu, TheTwinHarnessHoldsOnTheHost) {
  // The GPU tests' state dict and file comparison, with both twins in host memory.
  const TwinStateDict sd = varied_state_dict(40, {gputest::kCpuTwin}, /*with_cpu=*/true, 300);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host", sharded());
  Checkpointer ckpt(small_options());
  ckpt.save(sd.device, dir.path() / "twin", sharded());
  EXPECT_GT(expect_same_files(dir.path() / "twin", dir.path() / "host"), 2);
}

class CheckpointerGpuBackends : public ::testing::TestWithParam<IoBackendChoice> {
 protected:
  void SetUp() override { QS_REQUIRE_GPU(); }
};

TEST_P(CheckpointerGpuBackends, FilesEqualTheHostPathsForTheSameValues) {
  const TwinStateDict sd = varied_state_dict(41, {0}, /*with_cpu=*/true, 3000);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host", sharded());
  Checkpointer ckpt(small_options(GetParam()));
  SaveHandle handle = ckpt.save_async(sd.device, dir.path() / "gpu", sharded());
  handle.staged().get();
  const SaveResult result = handle.committed().get();
  EXPECT_GT(result.files.size(), 2u);
  EXPECT_GT(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 2);
}

TEST_P(CheckpointerGpuBackends, DirectIoGivesTheSameBytes) {
  const TwinStateDict sd = varied_state_dict(42, {0}, /*with_cpu=*/true, 200);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host");
  CheckpointerOptions o = small_options(GetParam());
  o.direct_io = true;
  Checkpointer ckpt(o);
  ckpt.save(sd.device, dir.path() / "gpu");
  EXPECT_GT(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, CheckpointerGpuBackends,
                         ::testing::Values(IoBackendChoice::posix, IoBackendChoice::io_uring),
                         [](const auto& info) { return info.param == IoBackendChoice::posix ? "posix" : "io_uring"; });

class CheckpointerGpu : public ::testing::Test {
 protected:
  void SetUp() override { QS_REQUIRE_GPU(); }
};

TEST_F(CheckpointerGpu, StagedMeansTheWeightsMayChange) {
  const TwinStateDict sd = varied_state_dict(43, {0}, /*with_cpu=*/false, 100);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host");
  Checkpointer ckpt(small_options());
  SaveHandle handle = ckpt.save_async(sd.device, dir.path() / "gpu");
  handle.staged().get();
  // Overwrite every device tensor's storage, as an optimizer step would.
  for (const TensorRef& t : sd.device) {
    if (t.device.kind == DeviceKind::cuda && t.storage_nbytes != 0) {
      ASSERT_EQ(cudaMemset(const_cast<void*>(t.storage_base), 0x7F, t.storage_nbytes), cudaSuccess);
    }
  }
  handle.committed().get();
  EXPECT_GT(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 0);
}

void CUDART_CB hold_stream(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

TEST_F(CheckpointerGpu, SavesTheWeightsAsQueuedBeforeSaveAsync) {
  // save_async is called while the legacy default stream still has a write of new values queued
  // (behind a 300 ms pause): the file holds the new values.
  std::mt19937 rng(44);
  TwinStorage storage(0, 1 << 20, rng);
  auto [device, host] = storage.view("w", DType::BF16, {512, 1024});
  std::byte* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), storage.bytes()), cudaSuccess);
  for (std::size_t i = 0; i < storage.bytes(); ++i) {
    storage.host()[i] ^= std::byte{0x33};
    pinned[i] = storage.host()[i];  // the host twin now holds the new values
  }
  TempDir dir;
  save_state_dict({host}, dir.path() / "host");
  Checkpointer ckpt(small_options());
  ASSERT_EQ(cudaLaunchHostFunc(cudaStreamLegacy, &hold_stream, nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(storage.device_data(), pinned, storage.bytes(), cudaMemcpyHostToDevice, cudaStreamLegacy),
            cudaSuccess);
  ckpt.save({device}, dir.path() / "gpu");
  EXPECT_EQ(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 1);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  (void)cudaFreeHost(pinned);
}

TEST_F(CheckpointerGpu, ManySavesReuseTheSamePinnedMemory) {
  const TwinStateDict sd = varied_state_dict(45, {0}, /*with_cpu=*/true, 300);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host", sharded());
  Checkpointer ckpt(small_options());
  const std::uint64_t pinned = ckpt.pinned_bytes();
  for (int i = 0; i < 5; ++i) {
    ckpt.save(sd.device, dir.path() / "gpu", sharded());
    EXPECT_EQ(ckpt.pinned_bytes(), pinned);
  }
  EXPECT_GT(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 2);
}

TEST_F(CheckpointerGpu, SeveralDevicesAndCpuTensorsInOneSave) {
  QS_REQUIRE_GPUS(2);
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  std::vector<int> devices;
  for (int d = 0; d < count; ++d) devices.push_back(d);
  const TwinStateDict sd = varied_state_dict(46, devices, /*with_cpu=*/true, 500);
  TempDir dir;
  save_state_dict(sd.host, dir.path() / "host", sharded());
  Checkpointer ckpt(small_options());
  ckpt.save(sd.device, dir.path() / "gpu", sharded());
  EXPECT_GT(expect_same_files(dir.path() / "gpu", dir.path() / "host"), 2);
}

}  // namespace
}  // namespace quicksave
