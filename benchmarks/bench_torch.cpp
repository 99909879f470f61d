// The LibTorch methods of quicksave-bench (its only LibTorch user: keep it small).
#include "bench_torch.hpp"

// torch::save and torch::from_blob come with <torch/torch.h> through the public LibTorch API header.
#include "quicksave/torch.hpp"

namespace quicksave::bench {
namespace {

class LibTorchMethods final : public TorchMethods {
 public:
  explicit LibTorchMethods(const std::vector<TensorRef>& tensors) {
    for (const auto& t : tensors) {
      // from_blob views the memory without copying; the bench keeps it alive.
      torch::Tensor tensor =
          torch::from_blob(const_cast<void*>(t.data), t.shape, torch::TensorOptions().dtype(torch_dtype_from(t.dtype)));
      state_dict_.insert(t.name, tensor);
      list_.push_back(tensor);
    }
  }
  SaveResult save_torch_state_dict(const std::filesystem::path& directory) const override {
    return quicksave::save_torch_state_dict(state_dict_, directory);
  }
  void torch_save(const std::filesystem::path& file) const override { torch::save(list_, file.string()); }

 private:
  StateDict state_dict_;
  std::vector<torch::Tensor> list_;
};

}  // namespace

std::unique_ptr<TorchMethods> TorchMethods::make(const std::vector<TensorRef>& tensors) {
  return std::make_unique<LibTorchMethods>(tensors);
}

}  // namespace quicksave::bench
