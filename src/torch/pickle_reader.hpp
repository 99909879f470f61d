// Reading torch.save zip archives that hold a state dict (see pickle_reader.cpp).
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace quicksave::torch_pickle {

// The (name, tensor) entries of the dict in `path`, in the file's order. Throws Error(corrupt)
// naming the file for anything that is not a torch.save archive of str → tensor.
std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::filesystem::path& path);

}  // namespace quicksave::torch_pickle
