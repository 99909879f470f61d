// SafetensorsFile: open + validate + mmap. The header is checked against the real file size
// before any tensor byte is handed out, so offsets can be trusted afterwards.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "quicksave/error.hpp"
#include "quicksave/reader.hpp"

namespace quicksave {

struct SafetensorsFile::State {
  std::filesystem::path path;
  const std::byte* bytes = nullptr;
  std::uint64_t size = 0;
  void* mapping = nullptr;            // munmap'ed on destruction
  std::unique_ptr<std::byte[]> owned; // when not mapped
  Header header;
  std::unordered_map<std::string_view, std::size_t> by_name;

  ~State() {
    if (mapping != nullptr) ::munmap(mapping, size);
  }
};

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

void read_all(int fd, std::byte* dst, std::uint64_t size, const std::filesystem::path& path) {
  std::uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, dst + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw io_error("pread", errno, "file=" + path.string() + ", offset=" + std::to_string(done));
    if (n == 0) throw Error(ErrorCode::corrupt, "file shrank while being read (file=" + path.string() + ")");
    done += static_cast<std::uint64_t>(n);
  }
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path, bool use_mmap) {
  auto state = std::make_shared<State>();
  state->path = path;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT) throw Error(ErrorCode::not_found, "No such file or directory: " + path.string(), err);
    throw io_error("open", err, "file=" + path.string());
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw io_error("fstat", errno, "file=" + path.string());
  if (!S_ISREG(st.st_mode)) throw Error(ErrorCode::invalid_argument, path.string() + " is not a regular file");
  state->size = static_cast<std::uint64_t>(st.st_size);
  if (use_mmap && state->size > 0) {
    // Private and writable: tensors that view the mapping can be modified in place (copy-on-write)
    // without touching the file or faulting.
    void* p = ::mmap(nullptr, state->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) throw io_error("mmap", errno, "file=" + path.string());
    state->mapping = p;
    state->bytes = static_cast<const std::byte*>(p);
  } else {
    state->owned = std::make_unique<std::byte[]>(state->size);
    read_all(fd.get(), state->owned.get(), state->size, path);
    state->bytes = state->owned.get();
  }
  const std::span<const std::byte> all(state->bytes, state->size);
  auto length = check_header_length(all, state->size);
  if (auto* p = std::get_if<HeaderProblem>(&length)) {
    throw Error(ErrorCode::corrupt, "Error while deserializing header: " + p->message + " (file=" + path.string() + ")");
  }
  const auto n = std::get<std::uint64_t>(length);
  auto parsed = check_header(std::string_view(reinterpret_cast<const char*>(state->bytes) + 8, n), state->size);
  if (auto* p = std::get_if<HeaderProblem>(&parsed)) {
    throw Error(ErrorCode::corrupt, "Error while deserializing header: " + p->message + " (file=" + path.string() + ")");
  }
  state->header = std::move(std::get<Header>(parsed));
  for (std::size_t i = 0; i < state->header.tensors.size(); ++i) state->by_name.emplace(state->header.tensors[i].name, i);
  SafetensorsFile file;
  file.state_ = std::move(state);
  return file;
}

const Header& SafetensorsFile::header() const { return state_->header; }
const std::filesystem::path& SafetensorsFile::path() const { return state_->path; }
std::uint64_t SafetensorsFile::file_size() const { return state_->size; }

const TensorEntry* SafetensorsFile::find(std::string_view name) const {
  const auto it = state_->by_name.find(name);
  return it == state_->by_name.end() ? nullptr : &state_->header.tensors[it->second];
}

std::span<const std::byte> SafetensorsFile::data(const TensorEntry& tensor) const {
  return {state_->bytes + state_->header.data_start() + tensor.begin, tensor.nbytes()};
}

std::shared_ptr<const void> SafetensorsFile::keepalive() const { return state_; }

ShardIndex read_index_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) throw Error(ErrorCode::not_found, "No such file or directory: " + path.string(), ENOENT);
    throw Error(ErrorCode::io, "cannot read " + path.string());
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return parse_index_json(text.str());
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (file=" + path.string() + ")");
  }
}

}  // namespace quicksave
