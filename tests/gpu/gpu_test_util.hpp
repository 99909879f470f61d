// Helpers of the GPU tests: skipping without a device, device memory with a host twin holding the
// same bytes (so that a save from the GPU can be compared with the host path's save of the same
// values), and file comparison.
#pragma once

#include "test_support.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "quicksave/dtype.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::gputest {

namespace fs = std::filesystem;

// Why the GPU tests cannot run here ("" when at least `needed` devices are present).
inline std::string missing_devices(int needed = 1) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(rc) + ")";
  }
  if (count < needed) {
    return "needs " + std::to_string(needed) + " CUDA device(s), found " + std::to_string(count);
  }
  return {};
}

#define QS_REQUIRE_GPUS(n)                                                        \
  do {                                                                            \
    const std::string qs_missing = ::quicksave::gputest::missing_devices(n);      \
    if (!qs_missing.empty()) GTEST_SKIP() << qs_missing;                          \
  } while (0)
#define QS_REQUIRE_GPU() QS_REQUIRE_GPUS(1)

#define QS_CUDA_OK(call)                                                           \
  do {                                                                             \
    const cudaError_t qs_rc = (call);                                              \
    ASSERT_EQ(qs_rc, cudaSuccess) << #call << ": " << cudaGetErrorName(qs_rc);     \
  } while (0)

// Device memory freed (on its device) when the last owner lets go.
inline std::shared_ptr<std::byte> device_alloc(int device, std::size_t bytes) {
  int previous = 0;
  (void)cudaGetDevice(&previous);
  if (cudaSetDevice(device) != cudaSuccess) throw std::runtime_error("cudaSetDevice failed");
  void* p = nullptr;
  const cudaError_t rc = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  (void)cudaSetDevice(previous);
  if (rc != cudaSuccess) throw std::runtime_error(std::string("cudaMalloc: ") + cudaGetErrorName(rc));
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [device](std::byte* q) {
    int prev = 0;
    (void)cudaGetDevice(&prev);
    (void)cudaSetDevice(device);
    (void)cudaFree(q);
    (void)cudaSetDevice(prev);
  });
}

// One storage on a device and its host twin with equal bytes; views of it come in pairs.
// Device -1 puts the "device" storage in host memory too (kCpuTwin): the harness itself can then
// be checked on machines without a GPU.
inline constexpr int kCpuTwin = -1;

class TwinStorage {
 public:
  TwinStorage(int device, std::size_t bytes, std::mt19937& rng, bool zero_or_one = false)
      : device_(device), bytes_(bytes) {
    host_ = std::make_shared<std::vector<std::byte>>(bytes == 0 ? 1 : bytes);
    for (auto& b : *host_) b = static_cast<std::byte>(zero_or_one ? rng() % 2 : rng());
    if (device == kCpuTwin) {
      auto copy = std::make_shared<std::vector<std::byte>>(*host_);
      dev_ = std::shared_ptr<std::byte>(copy, copy->data());
      return;
    }
    dev_ = device_alloc(device, bytes);
    if (cudaMemcpy(dev_.get(), host_->data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
      throw std::runtime_error("cudaMemcpy to the device failed");
    }
  }

  // The device view and its host twin: `shape`, `strides` (elements; empty = contiguous), first
  // element at `offset_elements`.
  std::pair<TensorRef, TensorRef> view(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                                       std::vector<std::int64_t> strides = {}, std::size_t offset_bytes = 0) const {
    TensorRef d;
    d.name = name;
    d.dtype = dtype;
    d.shape = std::move(shape);
    d.strides = std::move(strides);
    d.device = device_ == kCpuTwin ? Device{DeviceKind::cpu, -1} : Device{DeviceKind::cuda, device_};
    d.storage_base = dev_.get();
    d.data = dev_.get() + offset_bytes;
    d.storage_nbytes = bytes_;
    d.keepalive = dev_;
    TensorRef h = d;
    h.device = Device{DeviceKind::cpu, -1};
    h.storage_base = host_->data();
    h.data = host_->data() + offset_bytes;
    h.keepalive = host_;
    return {d, h};
  }

  std::byte* device_data() const { return dev_.get(); }
  std::vector<std::byte>& host() const { return *host_; }
  std::size_t bytes() const { return bytes_; }

 private:
  int device_;
  std::size_t bytes_;
  std::shared_ptr<std::vector<std::byte>> host_;
  std::shared_ptr<std::byte> dev_;
};

using testing::expect_same_files;
using testing::read_file;

}  // namespace quicksave::gputest

namespace quicksave::gputest {

// Tensors on GPUs and their host twins (same names, layouts and bytes), in the same order.
struct TwinStateDict {
  std::vector<TensorRef> device;
  std::vector<TensorRef> host;

  void add(const TwinStorage& storage, const std::string& name, DType dtype, std::vector<std::int64_t> shape,
           std::vector<std::int64_t> strides = {}, std::size_t offset_bytes = 0) {
    auto [d, h] = storage.view(name, dtype, std::move(shape), std::move(strides), offset_bytes);
    device.push_back(std::move(d));
    host.push_back(std::move(h));
  }
  // A CPU tensor in both lists (mixed saves).
  void add_cpu(const TensorRef& t) {
    device.push_back(t);
    host.push_back(t);
  }
};

// Bytes a view reaches: (sum (size-1)*stride + 1) * element bytes; 0 for an empty view.
inline std::size_t view_reach(const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
                              std::size_t element_bytes) {
  std::size_t last = 0;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return 0;
    last += static_cast<std::size_t>(shape[i] - 1) * static_cast<std::size_t>(strides[i]);
  }
  return (last + 1) * element_bytes;
}

// A varied state dict on `devices` (round robin): every dtype contiguous; every byte-sized dtype
// also as a strided view (transpose, step slice, permutation, stride-0 expansion, 8 dimensions
// with size-1 ones); 0-d, one-element and empty tensors; `small_count` bias-sized tensors; two
// tensors large enough to span many chunks; a tied alias; and, with `with_cpu`, CPU tensors.
inline TwinStateDict varied_state_dict(std::uint32_t seed, const std::vector<int>& devices, bool with_cpu,
                                       int small_count = 300) {
  std::mt19937 rng(seed);
  TwinStateDict sd;
  std::size_t next_device = 0;
  auto device = [&] { return devices[next_device++ % devices.size()]; };
  auto contiguous = [&](const std::string& name, DType dtype, std::vector<std::int64_t> shape) {
    std::size_t numel = 1;
    for (auto s : shape) numel *= static_cast<std::size_t>(s);
    const std::size_t bytes = numel * static_cast<std::size_t>(dtype_bits(dtype)) / 8;
    TwinStorage storage(device(), bytes, rng, dtype == DType::BOOL);
    sd.add(storage, name, dtype, std::move(shape));
  };
  auto strided = [&](const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                     std::vector<std::int64_t> strides, std::size_t offset_elements) {
    const std::size_t e = static_cast<std::size_t>(dtype_bits(dtype)) / 8;
    const std::size_t bytes = view_reach(shape, strides, e) + offset_elements * e + rng() % 16 * e;
    TwinStorage storage(device(), bytes, rng, dtype == DType::BOOL);
    sd.add(storage, name, dtype, std::move(shape), std::move(strides), offset_elements * e);
  };

  for (int i = 0; i < kDTypeCount; ++i) {
    const auto dtype = static_cast<DType>(i);
    const std::string tag = "d" + std::to_string(i) + "." + std::string(dtype_name(dtype));
    const int bits = dtype_bits(dtype);
    if (bits % 8 != 0) {  // sub-byte: whole bytes only, contiguous only
      contiguous(tag + ".packed", dtype, {static_cast<std::int64_t>(1 + rng() % 7), static_cast<std::int64_t>(8 * (1 + rng() % 9))});
      continue;
    }
    contiguous(tag + ".c", dtype, {static_cast<std::int64_t>(1 + rng() % 50), static_cast<std::int64_t>(1 + rng() % 70)});
    const std::int64_t r = 2 + rng() % 40;
    const std::int64_t c = 2 + rng() % 40;
    switch (i % 5) {
      case 0: strided(tag + ".transposed", dtype, {c, r}, {1, c}, 0); break;
      case 1: strided(tag + ".step", dtype, {r * 3}, {3}, 1 + rng() % 5); break;
      case 2: strided(tag + ".permuted", dtype, {3, 4, 5, 6}, {1, 90, 18, 3}, 0); break;  // of a [4, 5, 6, 3]
      case 3: strided(tag + ".expanded", dtype, {r, c}, {0, 1}, 2); break;
      default:
        strided(tag + ".rank8", dtype, {2, 2, 2, 2, 2, 2, 2, 3}, {1, 3, 7, 13, 29, 61, 127, 257}, 0);
        strided(tag + ".rank10", dtype, {2, 1, 3, 1, 2, 2, 1, 3, 2, 1}, {1, 7, 2, 9, 6, 25, 3, 50, 150, 1}, 1);
        break;
    }
  }
  // Tiny ones.
  contiguous("tiny.scalar", DType::F32, {});
  contiguous("tiny.one", DType::BF16, {1});
  contiguous("tiny.empty", DType::F16, {0});
  contiguous("tiny.empty2d", DType::I64, {3, 0});
  // Many small ones (biases and norms).
  for (int i = 0; i < small_count; ++i) {
    contiguous("layers." + std::to_string(i) + ".bias", i % 2 ? DType::BF16 : DType::F32,
               {static_cast<std::int64_t>(1 + rng() % 200)});
  }
  // Large ones, across many chunks; one of them a transposed view.
  contiguous("big.weight", DType::F32, {512, 700});
  strided("big.transposed", DType::F16, {700, 384}, {1, 700}, 0);
  // A tied alias: the same view under a second name (de-duplicated into metadata).
  {
    TensorRef d = sd.device[sd.device.size() - 3];
    TensorRef h = sd.host[sd.host.size() - 3];
    d.name = h.name = "big.weight.tied";
    sd.device.push_back(d);
    sd.host.push_back(h);
  }
  if (with_cpu) {
    for (int i = 0; i < 3; ++i) {
      const std::size_t n = 1000 + rng() % 50000;
      auto buffer = std::make_shared<std::vector<float>>(n);
      for (auto& v : *buffer) v = static_cast<float>(rng() % 1000) / 7.0f;
      TensorRef t{.name = "cpu." + std::to_string(i), .dtype = DType::F32, .shape = {static_cast<std::int64_t>(n)}};
      t.data = t.storage_base = buffer->data();
      t.storage_nbytes = n * sizeof(float);
      t.keepalive = buffer;
      sd.add_cpu(t);
    }
  }
  return sd;
}

}  // namespace quicksave::gputest

namespace quicksave::gputest {

// A small worker pool for the copiers' executors (they must not run tasks inline).
class TestPool {
 public:
  explicit TestPool(unsigned threads = 3) {
    for (unsigned i = 0; i < threads; ++i) {
      workers_.emplace_back([this] {
        for (;;) {
          std::function<void()> task;
          {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
            if (tasks_.empty()) return;
            task = std::move(tasks_.front());
            tasks_.pop_front();
          }
          task();
        }
      });
    }
  }
  ~TestPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  std::function<void(std::function<void()>)> executor() {
    return [this](std::function<void()> task) {
      {
        std::lock_guard lock(mutex_);
        tasks_.push_back(std::move(task));
      }
      wake_.notify_one();
    };
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace quicksave::gputest
