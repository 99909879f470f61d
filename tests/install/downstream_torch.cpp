// Uses the installed quicksave::torch: saves a tiny state dict and loads it back.
#include <quicksave/torch.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "downstream_torch_out";
  quicksave::StateDict sd;
  sd.insert("w", torch::arange(6, torch::kFloat).reshape({2, 3}));
  quicksave::save_torch_state_dict(sd, dir);
  const auto back = quicksave::load_state_dict_from_file(dir / "model.safetensors");
  const bool ok = torch::equal(back["w"], sd["w"]);
  std::printf("round trip through the installed quicksave::torch: %s\n", ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
