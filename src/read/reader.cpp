// SafetensorsFile: open + validate + mmap. The header is checked against the real file size
// before any tensor byte is handed out, so offsets can be trusted afterwards.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_map>

#include "io/regular_file.hpp"
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

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path, bool use_mmap) {
  auto state = std::make_shared<State>();
  state->path = path;
  // Only regular files: a FIFO would block open() and read(), a device never ends.
  const io::RegularFile fd = io::RegularFile::open(path);
  state->size = fd.size();
  if (use_mmap && state->size > 0) {
    // Private and writable: tensors that view the mapping can be modified in place (copy-on-write)
    // without touching the file or faulting.
    void* p = ::mmap(nullptr, state->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd(), 0);
    if (p == MAP_FAILED) throw io_error("mmap", errno, "file=" + path.string());
    state->mapping = p;
    state->bytes = static_cast<const std::byte*>(p);
  } else {
    state->owned = std::make_unique<std::byte[]>(state->size);
    fd.read_exact(state->owned.get(), state->size, 0);
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
  // A regular file of bounded size: an index that is a FIFO or a link to /dev/zero fails at once.
  const std::string text = io::RegularFile::open(path).read_all(kMaxIndexBytes, "index file");
  try {
    return parse_index_json(text);
  } catch (const Error& e) {
    throw Error(e.code(), std::string(e.what()) + " (file=" + path.string() + ")");
  }
}

}  // namespace quicksave
