// ScopedFile and write_blocking: the two helpers every caller of an IoBackend shares.
#include "io/backend.hpp"

#include <algorithm>
#include <future>

namespace quicksave::io {

void ScopedFile::close() {
  if (!handle_) return;
  io_->close(std::exchange(handle_, FileHandle{}));
}

void ScopedFile::reset() noexcept {
  if (!handle_) return;
  try {
    io_->close(std::exchange(handle_, FileHandle{}));
  } catch (...) {
    // Only failed saves drop an open file: their error is already on its way.
  }
}

void write_blocking(IoBackend& io, FileHandle file, std::uint64_t offset, const std::byte* data, std::size_t length) {
  constexpr std::size_t kMaxWriteBytes = 64ull << 20;
  while (length > 0) {
    const std::size_t n = std::min(length, kMaxWriteBytes);
    std::promise<void> done;
    io.write(file, offset, data, n, [&done](std::exception_ptr error) {
      if (error) done.set_exception(error);
      else done.set_value();
    });
    done.get_future().get();
    offset += n;
    data += n;
    length -= n;
  }
}

}  // namespace quicksave::io
