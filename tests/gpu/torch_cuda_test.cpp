// A CUDA LibTorch state dict through the adapter and the Checkpointer: CUDA tensors of every dtype
// LibTorch has, non-contiguous views, expanded and tiny tensors, hundreds of biases and a tied
// weight, saved straight from the GPU, equal byte for byte the files save_torch_state_dict writes
// from CPU copies that keep the same storage sharing. The tensors are made on the current stream
// and saved without a synchronize: the save waits for that stream itself. Built only against a
// LibTorch with CUDA; skipped when LibTorch sees no device.
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <map>
#include <string>

#include "../commit/checkpoint_fixture.hpp"
#include "gpu_test_util.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/torch.hpp"

namespace quicksave {
namespace {

using testing::TempDir;

// CPU copies with the same sharing: one CPU copy per CUDA storage, each tensor viewed into it at
// its own sizes, strides and offset.
StateDict cpu_twin(const StateDict& sd) {
  std::map<const void*, torch::Tensor> storages;
  StateDict cpu;
  for (const auto& item : sd) {
    const torch::Tensor& t = item.value();
    const void* key = t.storage().data();
    auto it = storages.find(key);
    if (it == storages.end()) {
      const std::int64_t elements = static_cast<std::int64_t>(t.storage().nbytes()) / t.element_size();
      it = storages.emplace(key, t.as_strided({elements}, {1}, 0).cpu()).first;
    }
    cpu.insert(item.key(), it->second.as_strided(t.sizes(), t.strides(), t.storage_offset()));
  }
  return cpu;
}

StateDict cuda_state_dict() {
  torch::manual_seed(7);
  const auto on = torch::TensorOptions().device(torch::kCUDA, 0);
  StateDict sd;
  auto floats = [&](torch::ScalarType type, std::vector<std::int64_t> shape) {
    return torch::randn(shape, on.dtype(torch::kFloat)).to(type);
  };
  auto ints = [&](torch::ScalarType type, std::int64_t lo, std::int64_t hi, std::vector<std::int64_t> shape) {
    return torch::randint(lo, hi, shape, on.dtype(torch::kLong)).to(type);
  };
  sd.insert("f32", floats(torch::kFloat, {300, 70}));
  sd.insert("f16", floats(torch::kHalf, {33, 17}));
  sd.insert("bf16", floats(torch::kBFloat16, {129, 65}));
  sd.insert("f64", floats(torch::kDouble, {41, 3}));
  sd.insert("c64", torch::randn({17, 5}, on.dtype(torch::kComplexFloat)));
  sd.insert("i8", ints(torch::kChar, -128, 128, {77}));
  sd.insert("u8", ints(torch::kByte, 0, 256, {9, 9}));
  sd.insert("i16", ints(torch::kShort, -30000, 30000, {123}));
  sd.insert("i32", ints(torch::kInt, -100000, 100000, {12, 12}));
  sd.insert("i64", ints(torch::kLong, -100000, 100000, {5, 7, 3}));
  sd.insert("bool", ints(torch::kBool, 0, 2, {31}));
#if TORCH_VERSION_MAJOR >= 2
  sd.insert("f8e4m3", floats(torch::kFloat8_e4m3fn, {16, 8}));
  sd.insert("f8e5m2", floats(torch::kFloat8_e5m2, {16, 8}));
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  // LibTorch's unsigned types have few CUDA kernels; a conversion it lacks leaves them out.
  try {
    sd.insert("u16", ints(torch::kUInt16, 0, 65536, {40}));
    sd.insert("u32", ints(torch::kUInt32, 0, 1 << 30, {40}));
    sd.insert("u64", ints(torch::kUInt64, 0, 1 << 30, {40}));
  } catch (const c10::Error&) {
  }
#endif
  // Views: a transpose and a step slice of their own bases (saved with their own bytes), an
  // expanded (stride-0) tensor, a permuted 4-D tensor.
  const torch::Tensor base = floats(torch::kBFloat16, {256, 384});
  sd.insert("view.t", base.t());
  sd.insert("view.step", floats(torch::kFloat, {90, 40}).slice(0, 1, 90, 3));
  sd.insert("view.expanded", floats(torch::kHalf, {1, 64}).expand({48, 64}));
  sd.insert("view.permuted", floats(torch::kFloat, {4, 5, 6, 7}).permute({3, 1, 0, 2}));
  // Tiny ones, many biases, a large one and a tied alias.
  sd.insert("tiny.scalar", torch::tensor(3.5, on.dtype(torch::kFloat)));
  sd.insert("tiny.empty", torch::empty({0}, on.dtype(torch::kHalf)));
  for (int i = 0; i < 400; ++i) sd.insert("layers." + std::to_string(i) + ".bias", floats(torch::kBFloat16, {64}));
  const torch::Tensor big = floats(torch::kFloat, {2048, 1024});
  sd.insert("big", big);
  sd.insert("big.tied", big);
  return sd;
}

class TorchCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device";
  }
};

TEST_F(TorchCuda, CudaStateDictEqualsTheCpuSave) {
  const StateDict sd = cuda_state_dict();  // queued on the current stream, not synchronized
  CheckpointerOptions options;
  options.chunk_bytes = 1 << 20;
  options.pinned_budget_bytes = 8 << 20;
  Checkpointer ckpt(options);
  TempDir dir;
  TorchSaveOptions torch_options;
  torch_options.max_shard_size = ShardSize("4MB");
  SaveOptions save_options;
  save_options.max_shard_size = ShardSize("4MB");
  SaveHandle handle = ckpt.save_async(sd, dir.path() / "gpu", save_options);
  handle.committed().get();
  save_torch_state_dict(cpu_twin(sd), dir.path() / "cpu", torch_options);
  EXPECT_GT(gputest::expect_same_files(dir.path() / "gpu", dir.path() / "cpu"), 2);
}

TEST_F(TorchCuda, TheOptimizerMayStepOnceStaged) {
  StateDict sd = cuda_state_dict();
  const StateDict before = cpu_twin(sd);
  Checkpointer ckpt;
  TempDir dir;
  SaveHandle handle = ckpt.save_async(sd, dir.path() / "gpu");
  handle.staged().get();
  {
    torch::NoGradGuard no_grad;
    for (auto& item : sd) {
      const torch::ScalarType type = item.value().scalar_type();
      const bool steppable = type == torch::kFloat || type == torch::kHalf || type == torch::kBFloat16;
      if (steppable && item.value().numel() > 0 && item.value().is_contiguous()) item.value().add_(1);
    }
  }
  handle.committed().get();
  save_torch_state_dict(before, dir.path() / "cpu");
  EXPECT_GT(gputest::expect_same_files(dir.path() / "gpu", dir.path() / "cpu"), 0);
}

// The producer stream. c10's side streams are non-blocking: the legacy default stream does not
// wait for them, so a save that waited only on it would copy the weights before the work below
// (a long sleep kernel, then a fill) has written them. Both the current stream (the adapter's
// default) and a stream named in SaveOptions must make the save copy the filled values.
torch::Tensor fill_late(const c10::cuda::CUDAStream& stream, torch::Tensor weights, double value) {
  c10::cuda::CUDAStreamGuard on(stream);
  at::cuda::sleep(200'000'000);  // ~0.1 s of GPU time queued before the fill
  weights.fill_(value);
  return weights;
}

std::map<std::string, double> first_values(const std::filesystem::path& file) {
  std::map<std::string, double> out;
  for (const auto& item : load_state_dict_from_file(file)) out[item.key()] = item.value().flatten()[0].item<double>();
  return out;
}

TEST_F(TorchCuda, SaveAsyncWaitsOnTheCurrentStream) {
  const auto on = torch::TensorOptions().device(torch::kCUDA, 0);
  torch::Tensor w = torch::zeros({1 << 20}, on);
  torch::cuda::synchronize();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, 0);
  Checkpointer ckpt;
  TempDir dir;
  SaveHandle handle;
  {
    c10::cuda::CUDAStreamGuard current(side);  // the training loop's current stream
    fill_late(side, w, 7.0);
    StateDict sd;
    sd.insert("w", w);
    handle = ckpt.save_async(sd, dir.path() / "ckpt");  // no synchronize
  }
  handle.committed().get();
  EXPECT_EQ(first_values(dir.path() / "ckpt" / "model.safetensors")["w"], 7.0);
}

TEST_F(TorchCuda, SaveOptionsNameTheProducerStream) {
  const auto on = torch::TensorOptions().device(torch::kCUDA, 0);
  torch::Tensor w = torch::zeros({1 << 20}, on);
  torch::cuda::synchronize();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, 0);
  fill_late(side, w, 5.0);  // the current stream stays the default one: only the option names `side`
  StateDict sd;
  sd.insert("w", w);
  SaveOptions options;
  options.producer_streams = {ProducerStream{0, side.stream()}};
  Checkpointer ckpt;
  TempDir dir;
  ckpt.save_async(sd, dir.path() / "ckpt", options).committed().get();
  EXPECT_EQ(first_values(dir.path() / "ckpt" / "model.safetensors")["w"], 5.0);
}

}  // namespace
}  // namespace quicksave
