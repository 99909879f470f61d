// One rank of a multi-process distributed save over real c10d (TCPStore + Gloo), driven by
// dist_process_test.cpp. The rank's state dict is generated from its seed, so the test can
// rebuild the union with --single.
//
// usage: dist_worker --rank R --world N --port P --layout replicated|partitioned --dir D
//                    [--fault-rank K] [--kill-rank K] [--timeout-ms T]
//        dist_worker --single --world N --layout L --dir D     (the union, one process)
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "engine/checkpointer_access.hpp"
#include "io/fault_backend.hpp"
#include "quicksave/dist.hpp"
#include "quicksave/error.hpp"

namespace {

using quicksave::StateDict;

StateDict rank_state_dict(int rank, bool replicated) {
  torch::manual_seed(replicated ? 1 : 10 + rank);
  StateDict sd;
  const std::string prefix = replicated ? "" : "stage" + std::to_string(rank) + ".";
  for (int layer = 0; layer < 4; ++layer) {
    const std::string p = prefix + "layers." + std::to_string(layer) + ".";
    sd.insert(p + "attn.weight", torch::randn({64, 64}).to(torch::kBFloat16));
    sd.insert(p + "attn.bias", torch::randn({64}));
    sd.insert(p + "mlp.weight", torch::randn({128, 64}));
    sd.insert(p + "norm.weight", torch::ones({64}));
  }
  if (replicated || rank == 0) {
    auto embed = torch::randn({100, 64});
    sd.insert(prefix + "embed.weight", embed);
    sd.insert(prefix + "lm_head.weight", embed);  // tied: de-duplicated into metadata
  }
  return sd;
}

quicksave::SaveOptions save_options() {
  quicksave::SaveOptions options;
  options.max_shard_size = 40000;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key == "--single") {
      args["single"] = "1";
    } else if (i + 1 < argc) {
      args[key.substr(2)] = argv[++i];
    }
  }
  const int world = std::stoi(args.at("world"));
  const bool replicated = args.at("layout") == "replicated";
  const std::filesystem::path dir = args.at("dir");
  if (args.count("single")) {
    StateDict all;
    for (int r = 0; r < (replicated ? 1 : world); ++r) {
      for (const auto& item : rank_state_dict(r, replicated)) all.insert(item.key(), item.value());
    }
    std::vector<quicksave::TensorRef> refs = quicksave::to_tensor_refs(all);
    quicksave::save_state_dict(refs, dir, save_options());
    return 0;
  }
  const int rank = std::stoi(args.at("rank"));
  setenv("RANK", std::to_string(rank).c_str(), 1);
  setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", args.at("port").c_str(), 1);
  quicksave::DistributedOptions options;
  options.layout = replicated ? quicksave::DistributedLayout::replicated : quicksave::DistributedLayout::partitioned;
  options.timeout = std::chrono::milliseconds(args.count("timeout-ms") ? std::stoi(args.at("timeout-ms")) : 20000);
  quicksave::CheckpointerOptions copts;
  copts.chunk_bytes = 16 * 1024;
  copts.pinned_budget_bytes = 16 * 16 * 1024;
  const std::filesystem::path error_file = dir.parent_path() / ("rank" + std::to_string(rank) + ".err");
  try {
    std::unique_ptr<quicksave::DistributedCheckpointer> ckpt;
    if (args.count("fault-rank") && std::stoi(args.at("fault-rank")) == rank) {
      // The faulty rank: its own store client and an I/O backend whose second write fails (EIO).
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(std::stoi(args.at("port")));
      store_options.isServer = rank == 0;
      store_options.numWorkers = static_cast<std::size_t>(world);
      store_options.waitWorkers = false;
      store_options.multiTenant = true;
      auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
      auto backend = std::make_unique<quicksave::io::FaultBackend>(
          quicksave::io::make_posix_backend(2),
          quicksave::io::FaultSpec{.op = quicksave::io::FaultOp::write, .kind = quicksave::io::FaultKind::eio, .nth = 2});
      ckpt = std::make_unique<quicksave::DistributedCheckpointer>(
          std::move(store), rank, world, quicksave::CheckpointerAccess::make_unique(copts, std::move(backend)), options);
    } else {
      ckpt = quicksave::DistributedCheckpointer::from_env(copts, options);
    }
    const StateDict sd = rank_state_dict(rank, replicated);
    quicksave::SaveHandle handle = ckpt->save_async(sd, dir, save_options());
    handle.staged().get();
    if (args.count("kill-rank") && std::stoi(args.at("kill-rank")) == rank) ::raise(SIGKILL);
    const auto result = handle.committed().get();
    std::printf("rank %d: %zu files, %s\n", rank, result.files.size(), to_string(result.commit_mode));
    return 0;
  } catch (const std::exception& e) {
    std::ofstream(error_file) << e.what();
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 1;
  }
}
