// `quicksave bench --ranks N` (the CLI execs this program, quicksave-dist-bench): aggregate write
// throughput of a distributed save on one machine, replicated layout (every rank holds the same
// state dict and writes its share of the shards), for 1, 2, 4, ... N processes, against the
// single-process figure of the same run.
//
// Parent mode:  quicksave-dist-bench --ranks N --size S [--repeat R] [--dir D] [--json]
// Rank mode:    quicksave-dist-bench --rank R --world W --port P --size S --dir D
//   Each rank builds the same synthetic state dict, joins a TCPStore on 127.0.0.1, waits for the
//   others (store barrier, outside the timing), then times save_async → committed, and prints one
//   JSON line: {"rank":R,"durable":seconds,"bytes":bytes_written_by_this_rank}.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "cli/synthetic.hpp"
#include "quicksave/dist.hpp"
#include "quicksave/error.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using quicksave::cli::SyntheticStateDict;

std::map<std::string, std::string> parse(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "--json") args["json"] = "1";
    else if (key.rfind("--", 0) == 0 && i + 1 < argc) args[key.substr(2)] = argv[++i];
    else throw quicksave::Error(quicksave::ErrorCode::invalid_argument, "unexpected argument " + key);
  }
  return args;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int run_rank(const std::map<std::string, std::string>& args) {
  const int rank = std::stoi(args.at("rank")), world = std::stoi(args.at("world"));
  const std::uint64_t size = static_cast<std::uint64_t>(quicksave::parse_size_to_int(args.at("size")));
  const SyntheticStateDict state(quicksave::cli::plan_synthetic_model(quicksave::cli::Layout::llama_7b_like, quicksave::DType::BF16, size), 0);
  quicksave::StateDict sd;
  for (const auto& ref : state.tensor_refs()) {
    sd.insert(ref.name, torch::from_blob(const_cast<void*>(ref.data), ref.shape, torch::TensorOptions().dtype(torch::kBFloat16)));
  }
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(std::stoi(args.at("port")));
  store_options.isServer = rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(world);
  store_options.waitWorkers = false;
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
  quicksave::CheckpointerOptions options = quicksave::CheckpointerOptions::from_env();
  options.pinned_budget_bytes = std::max<std::uint64_t>(options.pinned_budget_bytes, (size / world + (64ull << 20)) / (8ull << 20) * (8ull << 20));
  quicksave::DistributedCheckpointer ckpt(store, rank, world, options);
  store->add("bench/ready", 1);  // barrier outside the timing
  while (store->add("bench/ready", 0) < world) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const auto t0 = Clock::now();
  const auto result = ckpt.save(sd, args.at("dir"));
  const double durable = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("%s\n", nlohmann::json{{"rank", rank}, {"durable", durable}, {"bytes", result.bytes_written}}.dump().c_str());
  return 0;
}

// One world of `world` ranks; returns the slowest rank's durable time and the bytes written.
std::pair<double, std::uint64_t> run_world(int world, const std::string& size, const fs::path& dir) {
  const std::string port = std::to_string(free_port());
  std::vector<std::pair<pid_t, int>> children;
  for (int r = 0; r < world; ++r) {
    int fds[2];
    if (::pipe(fds) != 0) throw quicksave::io_error("pipe", errno);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      const std::string self = fs::read_symlink("/proc/self/exe").string();
      const std::string rank = std::to_string(r), w = std::to_string(world), d = dir.string();
      ::execl(self.c_str(), self.c_str(), "--rank", rank.c_str(), "--world", w.c_str(), "--port", port.c_str(), "--size", size.c_str(),
              "--dir", d.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    children.emplace_back(pid, fds[0]);
  }
  double slowest = 0;
  std::uint64_t bytes = 0;
  for (const auto& [pid, fd] : children) {
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      throw quicksave::Error(quicksave::ErrorCode::internal, "a rank of the " + std::to_string(world) + "-rank run failed");
    }
    const auto line = nlohmann::json::parse(out.substr(out.find('{')));
    slowest = std::max(slowest, line["durable"].get<double>());
    bytes += line["bytes"].get<std::uint64_t>();
  }
  return {slowest, bytes};
}

int run_parent(const std::map<std::string, std::string>& args) {
  const int max_ranks = std::stoi(args.at("ranks"));
  const int repeat = args.count("repeat") ? std::stoi(args.at("repeat")) : 1;
  const std::string size = args.count("size") ? args.at("size") : "4GB";
  const fs::path base = args.count("dir") ? fs::path(args.at("dir")) : fs::temp_directory_path();
  const fs::path work = fs::absolute(base / ("quicksave-dist-bench-" + std::to_string(::getpid())));
  std::vector<int> worlds;
  for (int world = 1; world <= max_ranks; world *= 2) worlds.push_back(world);
  std::map<int, std::vector<double>> durable_of;
  std::map<int, std::uint64_t> bytes_of;
  for (int r = 0; r < repeat; ++r) {
    for (const int world : worlds) {  // interleaved, so slow phases of the disk hit every world size
      std::error_code ec;
      fs::remove_all(work, ec);
      fs::create_directories(work);
      ::sync();  // outside the timing: earlier runs' dirty pages do not slow this one
      const auto [durable, bytes] = run_world(world, size, work / "ckpt");
      durable_of[world].push_back(durable);
      bytes_of[world] = bytes;
    }
  }
  std::error_code ec;
  fs::remove_all(work, ec);
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  nlohmann::json rows = nlohmann::json::array();
  const double single = static_cast<double>(bytes_of[1]) / median(durable_of[1]) / 1e9;
  for (const int world : worlds) {
    const auto& d = durable_of[world];
    const double gbps = static_cast<double>(bytes_of[world]) / median(d) / 1e9;
    rows.push_back({{"ranks", world}, {"durable_s", median(d)}, {"durable_min_s", *std::min_element(d.begin(), d.end())},
                    {"durable_max_s", *std::max_element(d.begin(), d.end())}, {"bytes", bytes_of[world]}, {"aggregate_gbps", gbps},
                    {"vs_one_rank", gbps / single}});
  }
  if (args.count("json")) {
    std::printf("%s\n", nlohmann::json{{"layout", "replicated"}, {"size", size}, {"repeat", repeat}, {"runs", rows}}.dump(2).c_str());
    return 0;
  }
  std::printf("quicksave bench --ranks %d: replicated layout, %s state dict, one machine (%u cpus), %d %s\n\n", max_ranks, size.c_str(),
              std::thread::hardware_concurrency(), repeat, repeat == 1 ? "run" : "runs each, median (min-max)");
  std::printf("%6s %24s %16s %10s\n", "ranks", "durable (s)", "aggregate GB/s", "vs 1 rank");
  for (const auto& row : rows) {
    char durable[64];
    std::snprintf(durable, sizeof durable, "%.2f (%.2f-%.2f)", row["durable_s"].get<double>(), row["durable_min_s"].get<double>(),
                  row["durable_max_s"].get<double>());
    std::printf("%6d %24s %16.3f %9.2fx\n", row["ranks"].get<int>(), durable, row["aggregate_gbps"].get<double>(),
                row["vs_one_rank"].get<double>());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto args = parse(argc, argv);
    if (args.count("rank")) return run_rank(args);
    if (!args.count("ranks")) {
      std::fprintf(stderr, "usage: quicksave-dist-bench --ranks N [--size S] [--repeat R] [--dir D] [--json]\n");
      return 2;
    }
    return run_parent(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quicksave-dist-bench: %s\n", e.what());
    return 1;
  }
}
