// CudaCopier: whole file images copied chunk by chunk from GPU tensors (every dtype, strided,
// tiny, mixed with CPU tensors, on several devices when present) equal the host copier's images
// of the same values; copies wait for the producer stream (legacy default or given); several
// streams and concurrent saves; the kernels are used for small and strided pieces; `done` runs
// exactly once, errors included. The no-device paths run everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gpu_test_util.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/error.hpp"
#include "stage/copier.hpp"
#include "stage/cuda_copier.hpp"

namespace quicksave::stage {
namespace {

using gputest::TestPool;
using gputest::TwinStateDict;
using gputest::TwinStorage;
using gputest::varied_state_dict;

using Images = std::vector<std::vector<std::byte>>;

// Every chunk of `plan` through `copier` at once, into per-file images (page-locked when `pinned`);
// checks that each chunk's `done` ran exactly once, and returns the first error, if any.
std::exception_ptr copy_plan(const plan::SavePlan& plan, Copier& copier, Images& images, bool pinned = true) {
  std::vector<std::byte*> targets;
  std::vector<void*> pinned_memory;
  for (const auto& file : plan.files) {
    if (pinned) {
      void* p = nullptr;
      if (cudaMallocHost(&p, file.file_bytes + 1) != cudaSuccess) throw std::runtime_error("cudaMallocHost failed");
      std::memset(p, 0xEE, file.file_bytes + 1);
      pinned_memory.push_back(p);
      targets.push_back(static_cast<std::byte*>(p));
    } else {
      images.emplace_back(file.file_bytes + 1, std::byte{0xEE});
      targets.push_back(images.back().data());
    }
  }
  std::vector<std::atomic<int>> calls(plan.chunks.size());
  std::atomic<std::size_t> remaining{plan.chunks.size()};
  std::promise<void> all_done;
  std::mutex mutex;
  std::exception_ptr first;
  for (std::size_t i = 0; i < plan.chunks.size(); ++i) {
    const plan::Chunk& chunk = plan.chunks[i];
    copier.copy_chunk(plan, chunk, targets[chunk.file] + chunk.file_offset, [&, i](std::exception_ptr error) {
      ++calls[i];
      if (error) {
        std::lock_guard lock(mutex);
        if (!first) first = error;
      }
      if (--remaining == 0) all_done.set_value();
    });
  }
  if (!plan.chunks.empty()) {
    EXPECT_EQ(all_done.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready) << "copies hang";
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a second call would come now
  for (std::size_t i = 0; i < calls.size(); ++i) EXPECT_EQ(calls[i].load(), 1) << "chunk " << i;
  if (pinned) {
    for (std::size_t f = 0; f < plan.files.size(); ++f) {
      images.emplace_back(targets[f], targets[f] + plan.files[f].file_bytes + 1);
      (void)cudaFreeHost(pinned_memory[f]);
    }
  }
  for (std::size_t f = 0; f < plan.files.size(); ++f) {
    EXPECT_EQ(images[f].back(), std::byte{0xEE}) << "written past the end of file " << f;
  }
  return first;
}

SaveOptions sharded() {
  SaveOptions options;
  options.max_shard_size = ShardSize(std::int64_t{1} << 20);  // several files
  return options;
}

void expect_same_images(const Images& a, const Images& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t f = 0; f < a.size(); ++f) {
    ASSERT_EQ(a[f].size(), b[f].size()) << "file " << f;
    const auto mismatch = std::mismatch(a[f].begin(), a[f].end(), b[f].begin());
    EXPECT_TRUE(mismatch.first == a[f].end()) << "file " << f << " differs at byte " << (mismatch.first - a[f].begin());
  }
}

// The host copier's images of the host twins: the reference.
Images host_images(const TwinStateDict& sd, const SaveOptions& options, std::uint64_t chunk_bytes, TestPool& pool) {
  const plan::SavePlan plan = plan::make_save_plan(sd.host, options, chunk_bytes);
  auto host = make_host_copier(pool.executor());
  Images images;
  const std::exception_ptr error = copy_plan(plan, *host, images, /*pinned=*/false);
  if (error) std::rethrow_exception(error);
  return images;
}

std::string message_of(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  }
}

ErrorCode code_of(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.code();
  } catch (...) {
  }
  return ErrorCode::internal;
}

// ---- no device needed ------------------------------------------------------------------------

TEST(CudaCopier, NameDevicesAndOptions) {
  TestPool pool;
  CudaCopier copier(pool.executor());
  EXPECT_EQ(copier.name(), "cuda");
  EXPECT_TRUE(copier.handles(Device{DeviceKind::cpu}));
  EXPECT_TRUE(copier.handles(Device{DeviceKind::cuda, 0}));
  EXPECT_FALSE(copier.handles(Device{DeviceKind::meta}));
  EXPECT_THROW(CudaCopier(Executor{}), Error);
  EXPECT_THROW(CudaCopier(pool.executor(), CudaCopierOptions{.streams_per_device = 0}), Error);
  EXPECT_THROW(CudaCopier(pool.executor(), CudaCopierOptions{.scratch_bytes = 100}), Error);
}

TEST(CudaCopier, HostOnlyChunksNeedNoDevice) {
  // Header bytes and CPU tensors (one of them strided) go through the host part alone.
  TestPool pool;
  std::mt19937 rng(1);
  auto a = std::make_shared<std::vector<float>>(50000);
  for (auto& v : *a) v = static_cast<float>(rng() % 977);
  TensorRef t1{.name = "a", .dtype = DType::F32, .shape = {250, 200}};
  t1.data = t1.storage_base = a->data();
  t1.storage_nbytes = a->size() * 4;
  t1.keepalive = a;
  TensorRef t2 = t1;
  t2.name = "a.t";
  t2.shape = {200, 250};
  t2.strides = {1, 200};
  const plan::SavePlan plan = plan::make_save_plan({t1, t2}, SaveOptions{}, 4096);
  CudaCopier copier(pool.executor());
  Images cuda;
  ASSERT_FALSE(copy_plan(plan, copier, cuda, /*pinned=*/false));
  auto host = make_host_copier(pool.executor());
  Images expected;
  ASSERT_FALSE(copy_plan(plan, *host, expected, /*pinned=*/false));
  expect_same_images(cuda, expected);
  EXPECT_EQ(copier.stats().chunks, 0u);
}

TEST(CudaCopier, TheTwinHarnessHoldsOnTheHost) {
  // The GPU tests' state dict and image comparison, with both twins in host memory: the CUDA
  // copier's host part against the host copier.
  TestPool pool;
  const TwinStateDict sd = varied_state_dict(20, {gputest::kCpuTwin}, /*with_cpu=*/true);
  const Images expected = host_images(sd, sharded(), 64 * 1024, pool);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, sharded(), 64 * 1024);
  ASSERT_GT(plan.files.size(), 1u);
  CudaCopier copier(pool.executor());
  Images images;
  ASSERT_FALSE(copy_plan(plan, copier, images, /*pinned=*/false));
  expect_same_images(images, expected);
}

TEST(CudaCopier, ACudaTensorItCannotReadFailsThroughDoneOnce) {
  // cuda:999 does not exist anywhere: unavailable without a device, invalid_argument with one.
  TestPool pool;
  auto bytes = std::make_shared<std::vector<float>>(1000, 1.0f);
  TensorRef t{.name = "w", .dtype = DType::F32, .shape = {1000}};
  t.data = t.storage_base = bytes->data();
  t.storage_nbytes = 4000;
  t.keepalive = bytes;
  t.device = Device{DeviceKind::cuda, 999};
  const plan::SavePlan plan = plan::make_save_plan({t}, SaveOptions{}, 4096);
  CudaCopier copier(pool.executor());
  Images images;
  const std::exception_ptr error = copy_plan(plan, copier, images, /*pinned=*/false);
  ASSERT_TRUE(error);
  const ErrorCode code = code_of(error);
  EXPECT_TRUE(code == ErrorCode::unavailable || code == ErrorCode::invalid_argument) << message_of(error);
  EXPECT_NE(message_of(error).find("'w'"), std::string::npos) << message_of(error);
}

TEST(CudaCopier, BeginSaveWithoutADeviceIsUnavailable) {
  if (gputest::missing_devices().empty()) GTEST_SKIP() << "a CUDA device is present: this is the no-device path";
  TestPool pool;
  CudaCopier copier(pool.executor());
  TensorRef t{.name = "layer.weight", .dtype = DType::BF16, .shape = {4}};
  t.device = Device{DeviceKind::cuda, 0};
  t.data = reinterpret_cast<void*>(4096);
  try {
    (void)copier.begin_save({t});
    FAIL() << "begin_save accepted a CUDA tensor without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_NE(std::string(e.what()).find("cudaGetDeviceCount"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer.weight"), std::string::npos) << e.what();
  }
  // A save without CUDA tensors needs no device.
  EXPECT_NO_THROW((void)copier.begin_save({}));
}

// ---- on devices ------------------------------------------------------------------------------

class CudaCopierGpu : public ::testing::Test {
 protected:
  void SetUp() override { QS_REQUIRE_GPU(); }
  TestPool pool_{4};
};

TEST_F(CudaCopierGpu, FileImagesEqualTheHostPath) {
  const TwinStateDict sd = varied_state_dict(21, {0}, /*with_cpu=*/true);
  const std::uint64_t chunk = 64 * 1024;
  const Images expected = host_images(sd, sharded(), chunk, pool_);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, sharded(), chunk);
  ASSERT_GT(plan.files.size(), 1u);
  CudaCopier copier(pool_.executor());
  for (const bool pinned : {true, false}) {
    auto save = copier.begin_save(plan.tensors);
    Images images;
    const std::exception_ptr error = copy_plan(plan, *save, images, pinned);
    ASSERT_FALSE(error) << message_of(error);
    expect_same_images(images, expected);
  }
  const CudaCopierStats stats = copier.stats();
  EXPECT_GT(stats.pack_launches, 0u);    // strided views
  EXPECT_GT(stats.gather_launches, 0u);  // biases
  EXPECT_EQ(stats.producer_events, 2u);  // one per save and device
}

TEST_F(CudaCopierGpu, CopyChunkWithoutASaveRecordsItsOwnEvents) {
  const TwinStateDict sd = varied_state_dict(22, {0}, /*with_cpu=*/false, 50);
  const Images expected = host_images(sd, SaveOptions{}, 1 << 20, pool_);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, SaveOptions{}, 1 << 20);
  CudaCopier copier(pool_.executor());
  Images images;
  ASSERT_FALSE(copy_plan(plan, copier, images));
  expect_same_images(images, expected);
  EXPECT_EQ(copier.stats().producer_events, copier.stats().chunks);
}

TEST_F(CudaCopierGpu, ManyTinyTensorsGoThroughTheGatherKernel) {
  const TwinStateDict sd = varied_state_dict(23, {0}, /*with_cpu=*/false, 4000);
  const std::uint64_t chunk = 8 << 20;
  const Images expected = host_images(sd, SaveOptions{}, chunk, pool_);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, SaveOptions{}, chunk);
  CudaCopier copier(pool_.executor());
  Images images;
  ASSERT_FALSE(copy_plan(plan, copier, images));
  expect_same_images(images, expected);
  const CudaCopierStats stats = copier.stats();
  EXPECT_GE(stats.gathered_pieces, 4000u);
  // Thousands of pieces, a handful of launches and copies per chunk (not one copy per tensor).
  EXPECT_LE(stats.gather_launches, 3 * plan.chunks.size());
  EXPECT_LT(stats.memcpy_calls, 1000u);
}

TEST_F(CudaCopierGpu, ScratchSmallerThanAChunkIsUsedInWindows) {
  const TwinStateDict sd = varied_state_dict(24, {0}, /*with_cpu=*/true, 500);
  const std::uint64_t chunk = 256 * 1024;
  const Images expected = host_images(sd, SaveOptions{}, chunk, pool_);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, SaveOptions{}, chunk);
  CudaCopier copier(pool_.executor(), CudaCopierOptions{.streams_per_device = 1, .scratch_bytes = 4096});
  auto save = copier.begin_save(plan.tensors);
  Images images;
  ASSERT_FALSE(copy_plan(plan, *save, images));
  expect_same_images(images, expected);
}

TEST_F(CudaCopierGpu, SeveralStreamsAndConcurrentSaves) {
  CudaCopier copier(pool_.executor(), CudaCopierOptions{.streams_per_device = 4, .scratch_bytes = 64 * 1024});
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int s = 0; s < 4; ++s) {
    threads.emplace_back([&, s] {
      const TwinStateDict sd = varied_state_dict(100 + s, {0}, /*with_cpu=*/s % 2 == 0, 200);
      TestPool reference_pool(2);
      const Images expected = host_images(sd, sharded(), 64 * 1024, reference_pool);
      const plan::SavePlan plan = plan::make_save_plan(sd.device, sharded(), 64 * 1024);
      for (int round = 0; round < 3; ++round) {
        auto save = copier.begin_save(plan.tensors);
        Images images;
        if (copy_plan(plan, *save, images) || images != expected) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

// Host function that holds a stream for a while: queued GPU work that has not run yet.
void CUDART_CB hold_stream(void* milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<int*>(milliseconds)));
}

// Queues on `producer`: a 400 ms pause, then new values written into `storage`. Returns at once.
void queue_late_write(cudaStream_t producer, const TwinStorage& storage, std::byte* new_values_pinned) {
  static int pause_ms = 400;
  ASSERT_EQ(cudaLaunchHostFunc(producer, &hold_stream, &pause_ms), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(storage.device_data(), new_values_pinned, storage.bytes(), cudaMemcpyHostToDevice, producer),
            cudaSuccess);
}

struct ProducerCase {
  std::unique_ptr<TwinStorage> storage;
  TensorRef device;
  std::byte* pinned = nullptr;
  std::vector<std::byte> old_values;
  std::vector<std::byte> new_values;
  plan::SavePlan plan;
  std::size_t data_offset = 0;  // of the tensor's bytes in the file

  explicit ProducerCase(std::mt19937& rng) {
    storage = std::make_unique<TwinStorage>(0, 3 << 20, rng);
    device = storage->view("w", DType::F32, {3 << 18}).first;
    old_values = storage->host();
    old_values.resize(storage->bytes());
    (void)cudaMallocHost(reinterpret_cast<void**>(&pinned), storage->bytes());
    for (std::size_t i = 0; i < storage->bytes(); ++i) pinned[i] = static_cast<std::byte>(old_values[i] ^ std::byte{0x5A});
    new_values.assign(pinned, pinned + storage->bytes());
    plan = plan::make_save_plan({device}, SaveOptions{}, 1 << 20);
    data_offset = plan.files[0].header.size();
  }
  ~ProducerCase() { (void)cudaFreeHost(pinned); }
  std::vector<std::byte> saved(const Images& images) const {
    return std::vector<std::byte>(images[0].begin() + static_cast<std::ptrdiff_t>(data_offset),
                                  images[0].begin() + static_cast<std::ptrdiff_t>(data_offset + storage->bytes()));
  }
};

TEST_F(CudaCopierGpu, WaitsForTheLegacyDefaultStreamByDefault) {
  std::mt19937 rng(31);
  ProducerCase c(rng);
  CudaCopier copier(pool_.executor());
  queue_late_write(cudaStreamLegacy, *c.storage, c.pinned);
  auto save = copier.begin_save(c.plan.tensors);  // records the event behind the late write
  Images images;
  ASSERT_FALSE(copy_plan(c.plan, *save, images));
  EXPECT_TRUE(c.saved(images) == c.new_values) << "the copy read the weights before the queued write";
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(CudaCopierGpu, WaitsForTheGivenProducerStream) {
  std::mt19937 rng(32);
  ProducerCase c(rng);
  cudaStream_t producer = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking), cudaSuccess);
  CudaCopier copier(pool_.executor(), CudaCopierOptions{.producer_stream = [producer](int) { return producer; }});
  queue_late_write(producer, *c.storage, c.pinned);
  auto save = copier.begin_save(c.plan.tensors);
  Images images;
  ASSERT_FALSE(copy_plan(c.plan, *save, images));
  EXPECT_TRUE(c.saved(images) == c.new_values);
  ASSERT_EQ(cudaStreamSynchronize(producer), cudaSuccess);
  (void)cudaStreamDestroy(producer);
}

TEST_F(CudaCopierGpu, WithoutThatWaitTheTestWouldSeeTheOldWeights) {
  // The control of the two tests above: the producer is another stream than the one that writes,
  // so nothing orders the copy after the late write and the copy reads the old values.
  std::mt19937 rng(33);
  ProducerCase c(rng);
  cudaStream_t writer = nullptr;
  cudaStream_t idle = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&writer, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&idle, cudaStreamNonBlocking), cudaSuccess);
  CudaCopier copier(pool_.executor(), CudaCopierOptions{.producer_stream = [idle](int) { return idle; }});
  queue_late_write(writer, *c.storage, c.pinned);
  auto save = copier.begin_save(c.plan.tensors);
  Images images;
  ASSERT_FALSE(copy_plan(c.plan, *save, images));
  EXPECT_TRUE(c.saved(images) == c.old_values) << "the copy did not run before the 400 ms pause ended";
  ASSERT_EQ(cudaStreamSynchronize(writer), cudaSuccess);
  (void)cudaStreamDestroy(writer);
  (void)cudaStreamDestroy(idle);
}

TEST_F(CudaCopierGpu, BeginSaveLeavesTheCallersDeviceAlone) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  const int mine = count - 1;
  ASSERT_EQ(cudaSetDevice(mine), cudaSuccess);
  const TwinStateDict sd = varied_state_dict(34, {0}, false, 10);
  CudaCopier copier(pool_.executor());
  (void)copier.begin_save(sd.device);
  int now = -1;
  ASSERT_EQ(cudaGetDevice(&now), cudaSuccess);
  EXPECT_EQ(now, mine);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

TEST_F(CudaCopierGpu, MislabelledTensorsAreRejectedUpFront) {
  CudaCopier copier(pool_.executor());
  std::vector<float> host(16, 1.0f);
  TensorRef t{.name = "liar", .dtype = DType::F32, .shape = {16}};
  t.device = Device{DeviceKind::cuda, 0};
  t.data = t.storage_base = host.data();
  t.storage_nbytes = 64;
  try {
    (void)copier.begin_save({t});
    FAIL() << "a host pointer labelled cuda:0 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("says cuda:0"), std::string::npos) << e.what();
  }
  // A strided view reaching past its storage.
  std::mt19937 rng(35);
  TwinStorage storage(0, 1024, rng);
  TensorRef past = storage.view("past", DType::F32, {16, 16}, {1, 16}).first;  // reaches 1024 bytes: fine
  EXPECT_NO_THROW((void)copier.begin_save({past}));
  past.shape = {17, 16};
  EXPECT_THROW((void)copier.begin_save({past}), Error);
}

TEST_F(CudaCopierGpu, TensorsOnSeveralDevicesShareChunks) {
  QS_REQUIRE_GPUS(2);
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  std::vector<int> devices;
  for (int d = 0; d < count; ++d) devices.push_back(d);
  const TwinStateDict sd = varied_state_dict(36, devices, /*with_cpu=*/true);
  const Images expected = host_images(sd, sharded(), 64 * 1024, pool_);
  const plan::SavePlan plan = plan::make_save_plan(sd.device, sharded(), 64 * 1024);
  CudaCopier copier(pool_.executor());
  auto save = copier.begin_save(plan.tensors);
  Images images;
  ASSERT_FALSE(copy_plan(plan, *save, images));
  expect_same_images(images, expected);
  EXPECT_EQ(copier.stats().producer_events, static_cast<std::uint64_t>(count));
}

}  // namespace
}  // namespace quicksave::stage
