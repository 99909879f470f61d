// The LibTorch methods of quicksave-bench, behind a torch-free interface: only bench_torch.cpp
// includes LibTorch and pays its compile time.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "quicksave/save.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::bench {

class TorchMethods {
 public:
  virtual ~TorchMethods() = default;
  // quicksave's synchronous save_torch_state_dict of the state dict into `directory`.
  virtual SaveResult save_torch_state_dict(const std::filesystem::path& directory) const = 0;
  // LibTorch's own torch::save of the same tensors (a tensor list, the form LibTorch serialises)
  // into `file`; no fsync (the caller adds it, as a user of torch::save would have to).
  virtual void torch_save(const std::filesystem::path& file) const = 0;

  // Wraps the tensors' memory as torch tensors without copying; the memory must outlive the result.
  static std::unique_ptr<TorchMethods> make(const std::vector<TensorRef>& tensors);
};

}  // namespace quicksave::bench

