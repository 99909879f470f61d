// quicksave-bench (also run as `quicksave bench`): quicksave against the alternatives and the machine's limits, in one process
// and one run, on the same in-memory state dict.
//
// Methods (each run writes into an emptied output folder):
//   quicksave save_async + committed, io_uring and posix backends
//   quicksave synchronous save_torch_state_dict
//   LibTorch's torch::save (+ fsync)
//   a plain single-threaded safetensors writer: header, write() per tensor, fsync (the reference's way)
//   disk limit: one sequential write (8 MiB write() calls) of the same byte count from pre-faulted
//   memory + fsync
//   copy limit: a 2-thread memcpy of the same bytes into pre-faulted memory
//   with --python: Python's torch.save, safetensors.torch.save_file and
//   huggingface_hub.save_torch_state_dict (benchmarks/python_peers.py), each + fsync
//
// Three times per run: blocked (the caller's thread is inside the save call; for a synchronous
// library that does not fsync, the call without the fsync we add), staged (the tensors may be
// changed again), durable (files and directory fsynced). Fairness: before every timed run the
// previous output is deleted, everything is synced and (when permitted) the page cache dropped,
// all outside the timed region; the methods are interleaved within each repeat. Ratios pair each
// run with the limit measured in the same repeat.
#include <fcntl.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_torch.hpp"
#include "cli/cli.hpp"
#include "cli/progress.hpp"
#include "cli/synthetic.hpp"
#include "cli/text_format.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/safetensors.hpp"
#include "quicksave/save.hpp"

namespace quicksave::bench {
namespace {

using namespace quicksave::cli;  // the command-line toolkit: Args, tables, sizes, progress, synthetic models

namespace fs = std::filesystem;

// The Python side of the bench (python_peers.py, load_bench.py): beside this program in the
// build tree, under share/quicksave in an installation.
fs::path python_script(const std::string& name = "python_peers.py") {
  std::error_code ec;
  const fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  const fs::path candidates[] = {exe_dir / name, exe_dir / ".." / "share" / "quicksave" / name};
  for (const auto& path : candidates) {
    if (fs::exists(path, ec)) return path;
  }
  throw Error(ErrorCode::not_found, "the Python side of the bench (" + name + ") is neither in " + exe_dir.string() +
                                        " nor in " + candidates[1].parent_path().lexically_normal().string());
}

// Replaces this process with `command` (the bench's other parts); throws only when that fails,
// saying what `command[0]` is (`what`).
[[noreturn]] void exec_or_throw(std::vector<std::string> command, const std::string& what) {
  std::vector<char*> cargv;
  for (auto& c : command) cargv.push_back(c.data());
  cargv.push_back(nullptr);
  ::execv(cargv[0], cargv.data());
  throw Error(ErrorCode::unavailable, "cannot run " + command.front() + " (" + what + "): " + std::strerror(errno));
}

// --load: the load benchmark is Python (it compares Python loaders): runs load_bench.py with the
// bench's interpreter and, unless PYTHONPATH says otherwise, the build's quicksave package.
[[noreturn]] void exec_load_bench(const Args& args, const std::string& python_exe) {
  std::error_code ec;
  const fs::path build_package = fs::read_symlink("/proc/self/exe", ec).parent_path() / ".." / "python";
  // A PYTHONPATH the caller set wins (e.g. another build's package for another interpreter).
  const char* old = std::getenv("PYTHONPATH");
  if ((old == nullptr || *old == '\0') && fs::exists(build_package / "quicksave", ec)) {
    ::setenv("PYTHONPATH", build_package.lexically_normal().string().c_str(), 1);
  }
  std::vector<std::string> command{python_exe, python_script("load_bench.py").string(), "--size", args.value("size").value_or("4GB")};
  if (const auto repeat = args.value("repeat")) command.insert(command.end(), {"--repeat", *repeat});
  if (const auto dir = args.value("dir")) command.insert(command.end(), {"--dir", *dir});
  if (const auto shards = args.value("shards")) command.insert(command.end(), {"--shards", *shards});
  if (args.flag("no-drop-caches")) command.push_back("--no-cold");
  exec_or_throw(std::move(command), "the Python interpreter of --python-exe");
}

using Clock = std::chrono::steady_clock;

constexpr const char* kHelp = R"(Usage: quicksave bench [options]   (the same as: quicksave-bench [options])

Times, in one process and one run, on the same in-memory state dict (realistic layer shapes):
  quicksave_async_io_uring   quicksave save_async + committed, io_uring backend
  quicksave_async_posix      quicksave save_async + committed, posix (pwrite) backend
  quicksave_async_no_checksums  the io_uring save without the checksum manifest (the hashing cost)
  quicksave_sync             quicksave save_torch_state_dict (synchronous, fsyncs)
  torch_save                 LibTorch torch::save of the same tensors, + fsync
  plain_safetensors          single-threaded safetensors writer: header, write() per tensor, + fsync
  disk_limit                 one sequential write (8 MiB calls) of the same bytes from pre-faulted
                             memory + fsync
  memcpy_limit               2-thread memcpy of the same bytes into pre-faulted memory
and with --python (benchmarks/python_peers.py, same bytes handed over through a file written
outside the timing): python_torch_save, python_safetensors_save_file (safetensors.torch.save_file),
python_hf_save_torch_state_dict (huggingface_hub.save_torch_state_dict), each + fsync.

For each: blocked (time the caller's thread spends in the save call), staged (until the tensors
may change again), durable (files and directory fsynced), GB/s (bytes / durable; memcpy: / staged),
staged / memcpy limit and durable / disk limit (paired within each repeat); Python peers also
blocked and durable as ratios to quicksave save_async (io_uring). With --repeat N every figure is
the median (min-max) of N interleaved runs.

Options:
  --size SIZE            state dict size (default 4GB)
  --repeat N             runs per method (default 1)
  --layout NAME          gpt2-xl | llama-7b-like (default llama-7b-like)
  --dtype D              bf16 | f16 | f32 (default bf16)
  --dir D                where to write (default: the temporary directory); a quicksave-bench-<pid>
                         folder is made inside and removed at the end
  --pinned-budget SIZE   quicksave's staging memory (default: the state dict's size, so staging
                         never waits for the disk); the rest of the engine's settings come from
                         the QUICKSAVE_* environment variables
  --ranks N              instead: a distributed save (replicated layout) by 1, 2, 4, ... N
                         processes on this machine, aggregate GB/s against one process in the same
                         run (runs quicksave-dist-bench, built with LibTorch's c10d)
  --load                 instead: loads (benchmarks/load_bench.py, run with --python-exe): quicksave's
                         load engine against safetensors load_file (+ load_state_dict),
                         huggingface_hub load_torch_model and torch.load(mmap=True), cold and warm
                         page cache, against fio's read limit and a 2-thread memcpy, in one run
  --shards LIST          with --load: the shard sizes to compare (default 5GB,500MB)
  --python               also time the Python peers
  --python-exe PATH      the interpreter for them (default: the active virtual environment's,
                         $VIRTUAL_ENV/bin/python, else /usr/bin/python3; the project's is
                         .venv/bin/python, made by scripts/setup.sh)
  --no-drop-caches       do not drop the page cache before each run (dropping needs root)
  --json                 print JSON (per-run samples and min/median/max) instead of the table
  --help                 this text

Exit status: 0 done; 1 a method failed; 2 usage error.
)";

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- file helpers -------------------------------------------------------------------------------

// write() until `length` bytes are written, at most `max_piece` bytes per call.
void write_all(int fd, const std::byte* data, std::uint64_t length, const fs::path& path, std::uint64_t max_piece = 1ull << 30) {
  while (length > 0) {
    const std::size_t piece = static_cast<std::size_t>(std::min<std::uint64_t>(length, max_piece));
    const ssize_t n = ::write(fd, data, piece);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw io_error("write", errno, "file=" + path.string());
    data += n;
    length -= static_cast<std::uint64_t>(n);
  }
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw io_error("open", errno, "file=" + path.string());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw io_error("fsync", err, "file=" + path.string());
}

int create_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("open", errno, "file=" + path.string());
  return fd;
}

void fsync_and_close(int fd, const fs::path& path) {
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw io_error("fsync", err, "file=" + path.string());
}

// Page-aligned memory, touched once so that no run pays page faults in it.
struct PrefaultedBuffer {
  explicit PrefaultedBuffer(std::uint64_t bytes) : size((bytes + 4095) / 4096 * 4096) {
    data = static_cast<std::byte*>(std::aligned_alloc(4096, std::max<std::uint64_t>(size, 4096)));
    if (data == nullptr) throw Error(ErrorCode::resource_exhausted, "cannot allocate " + std::to_string(size) + " bytes");
    std::memset(data, 0x5a, size);
  }
  ~PrefaultedBuffer() { std::free(data); }
  PrefaultedBuffer(const PrefaultedBuffer&) = delete;
  PrefaultedBuffer& operator=(const PrefaultedBuffer&) = delete;
  std::byte* data = nullptr;
  std::uint64_t size = 0;
};

std::string filesystem_name(const fs::path& path) {
  struct statfs s {};
  if (::statfs(path.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794C7630: return "overlayfs";
    case 0x6969: return "nfs";
    case 0x2FC12FC1: return "zfs";
    default: {
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(s.f_type));
      return std::string("fs type ") + hex;
    }
  }
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// Runs `argv` and returns its standard output (stderr passes through); throws when it fails.
std::string run_capture(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw io_error("pipe", errno);
  const pid_t pid = ::fork();
  if (pid < 0) throw io_error("fork", errno);
  if (pid == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  std::string out;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(ErrorCode::internal, argv[0] + " " + argv[1] + " failed (exit status " +
                                         std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) + ")");
  }
  return out;
}

// ---- results ------------------------------------------------------------------------------------

struct Sample {
  std::optional<double> blocked, staged, durable;
};

struct Method {
  std::string name;
  std::string label;
  std::string kind;  // "quicksave", "baseline", "limit", "python"
  bool available = true;
  std::string note;  // backend used, fallback reason, why unavailable
  std::vector<Sample> samples;
};

struct Stats {
  double min = 0, median = 0, max = 0;
};

std::optional<Stats> stats_of(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return Stats{v.front(), n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v.back()};
}

using Getter = std::function<std::optional<double>(const Method&, std::size_t repeat)>;

std::optional<Stats> stats(const Method& m, const Getter& get) {
  std::vector<double> values;
  for (std::size_t r = 0; r < m.samples.size(); ++r) {
    if (const auto v = get(m, r)) values.push_back(*v);
  }
  return stats_of(std::move(values));
}

nlohmann::json stats_json(const std::optional<Stats>& s) {
  if (!s) return nullptr;
  return {{"min", s->min}, {"median", s->median}, {"max", s->max}};
}

// ---- the bench ----------------------------------------------------------------------------------

struct Bench {
  // configuration
  std::uint64_t size = 0;
  std::size_t repeat = 1;
  bool json = false;
  bool drop_caches = true;
  bool python = false;
  std::string python_exe;
  std::uint64_t pinned_budget = 0;
  fs::path work;
  fs::path out;
  // state
  std::unique_ptr<SyntheticStateDict> state;
  std::vector<TensorRef> refs;
  std::uint64_t bytes = 0;
  std::unique_ptr<PrefaultedBuffer> limit_buffer;
  std::unique_ptr<TorchMethods> torch_methods;
  bool caches_dropped = false;
  std::string drop_failure;
  std::vector<Method> methods;

  void status(const std::string& text) const {
    if (!ProgressBar::terminal()) return;
    std::fprintf(stderr, "\r%s\033[K", text.c_str());
    std::fflush(stderr);
  }

  // Outside the timed region: remove the previous output, flush every dirty page, drop the page
  // cache when permitted, so that each method starts from the same state.
  void prepare() {
    std::error_code ec;
    fs::remove_all(out, ec);
    if (ec) throw Error(ErrorCode::io, "cannot remove " + out.string() + ": " + ec.message());
    ::sync();
    if (drop_caches) {
      // "1": the page cache only (clean after the sync); the anonymous state dict stays.
      bool ok = false;
      if (std::FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w")) {
        ok = std::fputs("1\n", f) >= 0;
        ok = std::fclose(f) == 0 && ok;
      }
      if (ok) {
        caches_dropped = true;
      } else if (drop_failure.empty()) {
        drop_failure = std::string("cannot write /proc/sys/vm/drop_caches: ") + std::strerror(errno);
      }
    }
  }

  Sample quicksave_async(IoBackendChoice backend, Method& method, bool checksums = true) {
    CheckpointerOptions options = CheckpointerOptions::from_env();
    options.io_backend = backend;
    options.pinned_budget_bytes = std::max(pinned_budget, options.chunk_bytes);
    Checkpointer checkpointer(options);  // pool allocated, pre-faulted and registered: before the clock
    prepare();
    const auto t0 = Clock::now();
    SaveOptions save_options;
    save_options.checksums = checksums;
    SaveHandle handle = checkpointer.save_async(refs, out, save_options);
    Sample s;
    s.blocked = since(t0);
    handle.staged().wait();
    s.staged = since(t0);
    const SaveResult result = handle.committed().get();
    s.durable = since(t0);
    method.note = "backend " + result.backend;
    if (!checkpointer.backend_fallback_reason().empty()) method.note += " (io_uring unavailable: " + checkpointer.backend_fallback_reason() + ")";
    return s;
  }

  Sample quicksave_sync() {
    prepare();
    const auto t0 = Clock::now();
    torch_methods->save_torch_state_dict(out);
    const double t = since(t0);
    return {t, t, t};
  }

  Sample torch_save() {
    prepare();
    fs::create_directories(out);
    const fs::path file = out / "model.pt";
    const auto t0 = Clock::now();
    torch_methods->torch_save(file);
    Sample s;
    s.blocked = s.staged = since(t0);
    fsync_path(file);
    fsync_path(out);
    s.durable = since(t0);
    return s;
  }

  Sample plain_safetensors() {
    prepare();
    fs::create_directories(out);
    const fs::path file = out / "model.safetensors";
    const auto t0 = Clock::now();
    std::vector<TensorSpec> specs;
    std::map<std::string, const TensorRef*> by_name;
    for (const auto& r : refs) {
      specs.push_back({r.name, r.dtype, std::vector<std::uint64_t>(r.shape.begin(), r.shape.end())});
      by_name[r.name] = &r;
    }
    const FileLayout layout = layout_file(specs, StringMap{{"format", "pt"}});
    const int fd = create_file(file);
    write_all(fd, reinterpret_cast<const std::byte*>(layout.header.data()), layout.header.size(), file);
    for (const auto& t : layout.tensors) write_all(fd, static_cast<const std::byte*>(by_name[t.name]->data), t.nbytes(), file);
    Sample s;
    s.blocked = s.staged = since(t0);
    fsync_and_close(fd, file);
    fsync_path(out);
    s.durable = since(t0);
    return s;
  }

  Sample disk_limit() {
    prepare();
    fs::create_directories(out);
    const fs::path file = out / "sequential.bin";
    const auto t0 = Clock::now();
    const int fd = create_file(file);
    // Front to back in 8 MiB write() calls (quicksave's chunk size): gigabyte-sized calls are
    // slower here, and a limit should be the best plain way to write the bytes.
    write_all(fd, limit_buffer->data, bytes, file, 8ull << 20);
    Sample s;
    s.staged = since(t0);
    fsync_and_close(fd, file);
    fsync_path(out);
    s.durable = s.blocked = since(t0);
    return s;
  }

  Sample memcpy_limit() {
    prepare();
    // The state dict's bytes, back to back, split evenly between two threads.
    const auto copy_range = [this](std::uint64_t begin, std::uint64_t end) {
      std::uint64_t at = 0;
      for (const auto& r : refs) {
        const std::uint64_t n = r.nbytes();
        const std::uint64_t lo = std::max(begin, at), hi = std::min(end, at + n);
        if (lo < hi) std::memcpy(limit_buffer->data + lo, static_cast<const std::byte*>(r.data) + (lo - at), hi - lo);
        at += n;
      }
    };
    const auto t0 = Clock::now();
    std::thread other(copy_range, bytes / 2, bytes);
    copy_range(0, bytes / 2);
    other.join();
    const double t = since(t0);
    Sample s;
    s.blocked = s.staged = t;
    return s;
  }

  void run_cpp_methods() {
    methods = {
        {"quicksave_async_io_uring", "quicksave save_async (io_uring)", "quicksave"},
        {"quicksave_async_posix", "quicksave save_async (posix)", "quicksave"},
        {"quicksave_async_no_checksums", "quicksave save_async (io_uring, no checksums)", "quicksave"},
        {"quicksave_sync", "quicksave save_torch_state_dict (sync)", "quicksave"},
        {"torch_save", "LibTorch torch::save", "baseline"},
        {"plain_safetensors", "plain safetensors writer", "baseline"},
        {"disk_limit", "disk limit (sequential write)", "limit"},
        {"memcpy_limit", "copy limit (2-thread memcpy)", "limit"},
    };
    const std::size_t total_runs = repeat * methods.size();
    std::size_t done = 0;
    for (std::size_t r = 0; r < repeat; ++r) {
      for (auto& m : methods) {
        status("bench: run " + std::to_string(++done) + "/" + std::to_string(total_runs) + ": " + m.label + " (repeat " +
               std::to_string(r + 1) + "/" + std::to_string(repeat) + ")");
        Sample s;
        if (m.name == "quicksave_async_io_uring") s = quicksave_async(IoBackendChoice::io_uring, m);
        else if (m.name == "quicksave_async_posix") s = quicksave_async(IoBackendChoice::posix, m);
        else if (m.name == "quicksave_async_no_checksums") s = quicksave_async(IoBackendChoice::io_uring, m, /*checksums=*/false);
        else if (m.name == "quicksave_sync") s = quicksave_sync();
        else if (m.name == "torch_save") s = torch_save();
        else if (m.name == "plain_safetensors") s = plain_safetensors();
        else if (m.name == "disk_limit") s = disk_limit();
        else s = memcpy_limit();
        m.samples.push_back(s);
      }
    }
    std::error_code ec;
    fs::remove_all(out, ec);
  }

  void run_python_methods() {
    const fs::path script = python_script();
    // The bytes go over through a file written before any timing; the C++ side's memory is
    // released first so that Python's copies fit.
    status("bench: writing the state dict for the Python peers");
    const fs::path input_dir = work / "python-input";
    SaveOptions single;
    single.max_shard_size = ShardSize(std::int64_t{1} << 50);  // one file, whatever the size
    save_state_dict(refs, input_dir, single);
    torch_methods.reset();
    limit_buffer.reset();
    refs.clear();
    state.reset();
    status("bench: running the Python peers (" + python_exe + ")");
    std::vector<std::string> argv = {python_exe, script.string(), "--input", (input_dir / "model.safetensors").string(),
                                     "--out", out.string(), "--repeat", std::to_string(repeat)};
    if (drop_caches) argv.push_back("--drop-caches");
    const nlohmann::json result = nlohmann::json::parse(run_capture(argv));
    for (const auto& pm : result.at("methods")) {
      Method m{pm.at("name").get<std::string>(), pm.at("label").get<std::string>(), "python"};
      m.available = pm.at("available").get<bool>();
      m.note = pm.value("note", std::string());
      for (const auto& s : pm.at("samples")) {
        const double blocked = s.at("blocked_s").get<double>();
        m.samples.push_back({blocked, blocked, s.at("durable_s").get<double>()});
      }
      methods.push_back(std::move(m));
    }
    std::error_code ec;
    fs::remove_all(input_dir, ec);
    fs::remove_all(out, ec);
  }

  const Method* find(std::string_view name) const {
    for (const auto& m : methods) {
      if (m.name == name) return &m;
    }
    return nullptr;
  }

  // Per-repeat ratio of `value` of `m` to `reference_value` of `reference` (same repeat index).
  Getter ratio(const Getter& value, const Method* reference, const Getter& reference_value) const {
    return [=](const Method& m, std::size_t r) -> std::optional<double> {
      if (reference == nullptr || r >= reference->samples.size()) return std::nullopt;
      const auto a = value(m, r);
      const auto b = reference_value(*reference, r);
      if (!a || !b || *b <= 0) return std::nullopt;
      return *a / *b;
    };
  }

  struct Columns {
    Getter blocked, staged, durable, gbps, staged_vs_memcpy, durable_vs_disk, blocked_vs_quicksave, durable_vs_quicksave;
  };

  Columns columns() const {
    Columns c;
    c.blocked = [](const Method& m, std::size_t r) { return m.samples[r].blocked; };
    c.staged = [](const Method& m, std::size_t r) { return m.name == "disk_limit" ? std::nullopt : m.samples[r].staged; };
    c.durable = [](const Method& m, std::size_t r) { return m.samples[r].durable; };
    const double gb = static_cast<double>(bytes) / 1e9;
    c.gbps = [gb](const Method& m, std::size_t r) -> std::optional<double> {
      const auto t = m.samples[r].durable ? m.samples[r].durable : m.samples[r].staged;
      if (!t || *t <= 0) return std::nullopt;
      return gb / *t;
    };
    const Method* memcpy = find("memcpy_limit");
    const Method* disk = find("disk_limit");
    const Method* qs = find("quicksave_async_io_uring");
    c.staged_vs_memcpy = ratio(c.staged, memcpy, c.staged);
    c.durable_vs_disk = ratio(c.durable, disk, c.durable);
    const Getter python_only_blocked = [c](const Method& m, std::size_t r) { return m.kind == "python" ? c.blocked(m, r) : std::nullopt; };
    const Getter python_only_durable = [c](const Method& m, std::size_t r) { return m.kind == "python" ? c.durable(m, r) : std::nullopt; };
    c.blocked_vs_quicksave = ratio(python_only_blocked, qs, c.blocked);
    c.durable_vs_quicksave = ratio(python_only_durable, qs, c.durable);
    return c;
  }

  // The hashing cost: quicksave save_async (io_uring) with checksums over the same save without,
  // paired within each repeat.
  struct ChecksumCost {
    double staged = 0, durable = 0;
  };
  std::optional<ChecksumCost> checksum_cost() const {
    const Method* with = find("quicksave_async_io_uring");
    const Method* without = find("quicksave_async_no_checksums");
    if (with == nullptr || without == nullptr) return std::nullopt;
    std::vector<double> staged, durable;
    for (std::size_t r = 0; r < std::min(with->samples.size(), without->samples.size()); ++r) {
      const Sample& a = with->samples[r];
      const Sample& b = without->samples[r];
      if (a.staged && b.staged && *b.staged > 0) staged.push_back(*a.staged / *b.staged);
      if (a.durable && b.durable && *b.durable > 0) durable.push_back(*a.durable / *b.durable);
    }
    const auto s = stats_of(staged), d = stats_of(durable);
    if (!s || !d) return std::nullopt;
    return ChecksumCost{s->median, d->median};
  }

  // "median (min-max) unit" with the unit chosen by the median; just the median for one run.
  enum class Unit { seconds, ratio, plain };
  std::string cell(const Method& m, const Getter& get, Unit unit) const {
    const auto s = stats(m, get);
    if (!s) return "-";
    const auto sig3 = [](double v) { return fixed(v, v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : 3); };
    double scale = 1;
    std::string suffix;
    if (unit == Unit::seconds) {
      if (s->median < 1) scale = 1e3, suffix = " ms";
      else suffix = " s";
    } else if (unit == Unit::ratio) {
      suffix = "x";
    }
    std::string text = sig3(s->median * scale);
    if (m.samples.size() > 1) text += " (" + sig3(s->min * scale) + "-" + sig3(s->max * scale) + ")";
    return text + suffix;
  }

  std::string table() const {
    const Columns c = columns();
    Table t({"method", "blocked", "staged", "durable", "GB/s", "staged/memcpy", "durable/disk"}, {1, 2, 3, 4, 5, 6});
    for (const auto& m : methods) {
      if (!m.available) continue;
      t.add({m.label, cell(m, c.blocked, Unit::seconds), cell(m, c.staged, Unit::seconds), cell(m, c.durable, Unit::seconds),
             cell(m, c.gbps, Unit::plain), cell(m, c.staged_vs_memcpy, Unit::ratio), cell(m, c.durable_vs_disk, Unit::ratio)});
    }
    std::string out = t.str();
    if (const auto cost = checksum_cost()) {
      out += "checksums (XXH3 of every tensor, from the staging buffers): staged " + fixed(cost->staged, 2) +
             "x, durable " + fixed(cost->durable, 2) + "x the same save without (medians of paired runs)\n";
    }
    if (std::any_of(methods.begin(), methods.end(), [](const Method& m) { return m.kind == "python"; })) {
      const Method* reference = find("quicksave_async_io_uring");
      const std::string against = reference != nullptr ? reference->label : std::string("quicksave save_async");
      Table p({"Python peer", "blocked / " + against, "durable / " + against}, {1, 2});
      for (const auto& m : methods) {
        if (m.kind != "python") continue;
        if (!m.available) {
          p.add({m.label, "unavailable: " + m.note, ""});
          continue;
        }
        p.add({m.label, cell(m, c.blocked_vs_quicksave, Unit::ratio), cell(m, c.durable_vs_quicksave, Unit::ratio)});
      }
      out += "\n" + p.str();
    }
    return out;
  }

  nlohmann::json to_json(const std::string& fs_name) const {
    const Columns c = columns();
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : methods) {
      nlohmann::json samples = nlohmann::json::array();
      for (const auto& s : m.samples) {
        const auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
        samples.push_back({{"blocked_s", opt(s.blocked)}, {"staged_s", opt(s.staged)}, {"durable_s", opt(s.durable)}});
      }
      list.push_back({{"name", m.name}, {"label", m.label}, {"kind", m.kind}, {"available", m.available}, {"note", m.note},
                      {"samples", samples}, {"blocked_s", stats_json(stats(m, c.blocked))},
                      {"staged_s", stats_json(stats(m, c.staged))}, {"durable_s", stats_json(stats(m, c.durable))},
                      {"gb_per_s", stats_json(stats(m, c.gbps))}, {"staged_vs_memcpy", stats_json(stats(m, c.staged_vs_memcpy))},
                      {"durable_vs_disk", stats_json(stats(m, c.durable_vs_disk))},
                      {"blocked_vs_quicksave", stats_json(stats(m, c.blocked_vs_quicksave))},
                      {"durable_vs_quicksave", stats_json(stats(m, c.durable_vs_quicksave))}});
    }
    struct utsname u {};
    ::uname(&u);
    const SyntheticModel& model = state_model;
    return {{"config",
             {{"requested_bytes", size}, {"tensor_bytes", bytes}, {"tensors", model.tensors.size()},
              {"layout", layout_name(model.layout)}, {"dtype", dtype_name(model.dtype)}, {"layers", model.layers},
              {"repeat", repeat}, {"dir", work.string()}, {"pinned_budget_bytes", pinned_budget},
              {"page_cache_dropped", caches_dropped}, {"page_cache_note", drop_failure},
              {"python_ratios_against", "quicksave_async_io_uring"}}},
            {"machine",
             {{"cpus", std::thread::hardware_concurrency()}, {"cpu_model", cpu_model()},
              {"memory_bytes", static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))},
              {"kernel", u.release}, {"filesystem", fs_name}}},
            {"methods", list}};
  }

  SyntheticModel state_model;  // kept after the state dict is released (Python peers)
};

}  // namespace

int run_bench(std::span<const std::string> argv) {
  if (wants_help(argv)) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const Args args(argv, {"json", "python", "no-drop-caches", "load"},
                  {"size", "repeat", "layout", "dtype", "dir", "pinned-budget", "python-exe", "ranks", "shards"});
  if (!args.positional().empty()) throw UsageError("unexpected argument " + args.positional().front());
  if (const auto ranks = args.value("ranks")) {
    if (parse_count(*ranks, "ranks") == 0) throw UsageError("--ranks must be at least 1");
    std::error_code ec;
    const fs::path tool = fs::read_symlink("/proc/self/exe", ec).parent_path() / "quicksave-dist-bench";
    std::vector<std::string> command{tool.string(), "--ranks", *ranks, "--size", args.value("size").value_or("4GB")};
    if (const auto dir = args.value("dir")) command.insert(command.end(), {"--dir", *dir});
    if (const auto repeat = args.value("repeat")) command.insert(command.end(), {"--repeat", *repeat});
    if (args.flag("json")) command.push_back("--json");
    exec_or_throw(std::move(command), "built only with LibTorch");
  }
  Bench bench;
  bench.size = parse_byte_size(args.value("size").value_or("4GB"), "size");
  bench.repeat = args.value("repeat") ? parse_count(*args.value("repeat"), "repeat") : 1;
  if (bench.repeat == 0) throw UsageError("--repeat must be at least 1");
  bench.json = args.flag("json");
  bench.python = args.flag("python");
  bench.drop_caches = !args.flag("no-drop-caches");
  const Layout layout = parse_layout(args.value("layout").value_or("llama-7b-like"));
  const DType dtype = parse_weight_dtype(args.value("dtype").value_or("bf16"));
  if (const auto exe = args.value("python-exe")) {
    bench.python_exe = *exe;
  } else {
    // The active virtual environment's interpreter (the project's is .venv: `--python-exe .venv/bin/python`).
    const char* venv = std::getenv("VIRTUAL_ENV");
    bench.python_exe = venv != nullptr && *venv != '\0' ? (fs::path(venv) / "bin" / "python").string() : "/usr/bin/python3";
  }
  if (args.flag("load")) exec_load_bench(args, bench.python_exe);
  const fs::path base = args.value("dir") ? fs::path(*args.value("dir")) : fs::temp_directory_path();
  bench.work = fs::absolute(base / ("quicksave-bench-" + std::to_string(::getpid())));
  bench.out = bench.work / "out";
  fs::create_directories(bench.work);
  // The work folder goes whatever happens.
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } cleanup{bench.work};

  bench.state_model = plan_synthetic_model(layout, dtype, bench.size);
  bench.status("bench: generating the state dict (" + bench.state_model.description() + ", " + human_bytes(bench.state_model.total_bytes) + ")");
  bench.state = std::make_unique<SyntheticStateDict>(bench.state_model, 0);
  bench.refs = bench.state->tensor_refs();
  bench.bytes = bench.state_model.total_bytes;
  bench.pinned_budget = args.value("pinned-budget") ? parse_byte_size(*args.value("pinned-budget"), "pinned-budget")
                                                    : (bench.bytes + (8ull << 20) - 1) / (8ull << 20) * (8ull << 20);
  bench.limit_buffer = std::make_unique<PrefaultedBuffer>(bench.bytes);
  bench.torch_methods = TorchMethods::make(bench.refs);

  bench.run_cpp_methods();
  if (bench.python) bench.run_python_methods();
  bench.status("");
  if (ProgressBar::terminal()) std::fputs("\r\033[K", stderr);

  const std::string fs_name = filesystem_name(bench.work);
  if (bench.json) {
    std::printf("%s\n", bench.to_json(fs_name).dump(2).c_str());
    return kExitOk;
  }
  std::printf("quicksave bench: %s in %zu tensors (%s), %zu %s%s\n", human_bytes(bench.bytes).c_str(), bench.state_model.tensors.size(),
              bench.state_model.description().c_str(), bench.repeat, bench.repeat == 1 ? "run" : "runs",
              bench.repeat == 1 ? "" : " each, median (min-max)");
  std::printf("machine: %u cpus (%s), %s memory, %s at %s; pinned budget %s; page cache %s\n\n", std::thread::hardware_concurrency(),
              cpu_model().c_str(),
              human_bytes(static_cast<std::uint64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))).c_str(),
              fs_name.c_str(), bench.work.parent_path().string().c_str(), human_bytes(bench.pinned_budget).c_str(),
              bench.caches_dropped ? "dropped before each run" : bench.drop_caches ? ("kept (" + bench.drop_failure + ")").c_str() : "kept (--no-drop-caches)");
  std::fputs(bench.table().c_str(), stdout);
  std::fputs("\ndurable = files and folder fsynced (added after the call for torch::save, the plain writer and the\n"
             "Python peers, which do not fsync); ratios are per repeat against the limit of the same repeat.\n", stdout);
  for (const auto& m : bench.methods) {
    if (m.available && !m.note.empty()) std::printf("%s: %s\n", m.name.c_str(), m.note.c_str());
  }
  return kExitOk;
}

}  // namespace quicksave::bench

int main(int argc, char** argv) {
  const std::vector<std::string> words(argv + 1, argv + argc);
  return quicksave::cli::run_guarded("quicksave-bench", quicksave::bench::run_bench, words);
}
