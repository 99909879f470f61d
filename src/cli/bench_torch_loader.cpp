// Loads the LibTorch module of `quicksave bench` (see bench_torch.hpp) with dlopen.
#include <dlfcn.h>

#include "cli/bench_torch.hpp"
#include "quicksave/error.hpp"

namespace quicksave::cli {

std::unique_ptr<TorchMethods> TorchMethods::load(const std::vector<TensorRef>& tensors) {
  constexpr const char* kModule = "libquicksave_cli_torch.so";
  std::error_code ec;
  const std::filesystem::path exe_dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  // The build tree puts the module beside the executable; an installation in the library folder.
  const std::filesystem::path candidates[] = {exe_dir / kModule, exe_dir / ".." / QUICKSAVE_INSTALL_LIBDIR / kModule};
  std::string errors;
  for (const auto& path : candidates) {
    if (!std::filesystem::exists(path, ec)) continue;
    void* module = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (module == nullptr) {
      errors += std::string(" ") + ::dlerror() + ";";
      continue;
    }
    // Never dlclose'd: LibTorch does not support being unloaded.
    auto* make = reinterpret_cast<decltype(&quicksave_cli_make_torch_methods)>(::dlsym(module, "quicksave_cli_make_torch_methods"));
    if (make == nullptr) {
      errors += " " + path.string() + " has no quicksave_cli_make_torch_methods;";
      continue;
    }
    return std::unique_ptr<TorchMethods>(make(&tensors));
  }
  throw Error(ErrorCode::unavailable, std::string("cannot load the LibTorch part of the bench (") + kModule + ", looked in " +
                                          candidates[0].parent_path().string() + " and " + candidates[1].parent_path().string() + ")" +
                                          errors);
}

}  // namespace quicksave::cli
