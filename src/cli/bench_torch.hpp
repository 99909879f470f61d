// The LibTorch methods of `quicksave bench`, behind a torch-free interface. They live in a
// separate module (libquicksave_cli_torch.so, bench_torch.cpp) that only `quicksave bench`
// loads: every other command starts without loading LibTorch (which costs about 0.3 s), and only
// bench_torch.cpp pays LibTorch's compile time.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "quicksave/save.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave::cli {

class TorchMethods {
 public:
  virtual ~TorchMethods() = default;
  // quicksave's synchronous save_torch_state_dict of the state dict into `directory`.
  virtual SaveResult save_torch_state_dict(const std::filesystem::path& directory) const = 0;
  // LibTorch's own torch::save of the same tensors (a tensor list, the form LibTorch serialises)
  // into `file`; no fsync (the caller adds it, as a user of torch::save would have to).
  virtual void torch_save(const std::filesystem::path& file) const = 0;

  // Loads the module (next to the executable, or in the installed library folder) and wraps the
  // tensors' memory as torch tensors without copying; the memory must outlive the result.
  // Throws Error(unavailable) when the module cannot be loaded.
  static std::unique_ptr<TorchMethods> load(const std::vector<TensorRef>& tensors);
};

}  // namespace quicksave::cli

// The module's entry point, looked up by name.
extern "C" quicksave::cli::TorchMethods* quicksave_cli_make_torch_methods(const std::vector<quicksave::TensorRef>* tensors);
