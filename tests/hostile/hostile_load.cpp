// The C++ loader of the hostile corpus: loads PATH with quicksave's LibTorch API and reports
// "ok: N tensors" (exit 0) or the quicksave::Error (exit 1). Any other exception type is a
// defect (exit 3): every failure must be a quicksave::Error saying what is wrong.
//
//   hostile_load PATH [--model ab] [--strict] [--bin]
//     --model ab  load into a module with Linear layers `a` and `b` (load_torch_model), else
//                 load_checkpoint (a file or a folder)
//     --strict    strict=true       --bin  safe=false (.bin checkpoints)
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "quicksave/error.hpp"
#include "quicksave/torch.hpp"

namespace {

struct Ab : torch::nn::Module {
  Ab() : a(register_module("a", torch::nn::Linear(2, 2))), b(register_module("b", torch::nn::Linear(2, 2))) {}
  torch::nn::Linear a, b;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: hostile_load PATH [--model ab] [--strict] [--bin]\n");
    return 2;
  }
  const std::string path = argv[1];
  bool model = false;
  quicksave::LoadModelOptions options;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc && std::strcmp(argv[i + 1], "ab") == 0) {
      model = true;
      ++i;
    } else if (std::strcmp(argv[i], "--strict") == 0) {
      options.strict = true;
    } else if (std::strcmp(argv[i], "--bin") == 0) {
      options.safe = false;
    } else {
      std::fprintf(stderr, "hostile_load: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  try {
    if (model) {
      Ab ab;
      const auto keys = quicksave::load_torch_model(ab, path, options);
      std::printf("ok: loaded into the module, %zu missing, %zu unexpected keys\n", keys.missing_keys.size(),
                  keys.unexpected_keys.size());
    } else {
      const auto state_dict = quicksave::load_checkpoint(path, options);
      std::printf("ok: %zu tensors\n", state_dict.size());
    }
    return 0;
  } catch (const quicksave::Error& e) {
    std::printf("error (%s): %s\n", quicksave::to_string(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::printf("defect: an exception that is not a quicksave::Error: %s\n", e.what());
    return 3;
  }
}
