// Defaults shared by every IoBackend.
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/backend.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {

void IoBackend::hard_link(const fs::path& from, const fs::path& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return;
  const int err = errno;
  const std::string context = "from=" + from.string() + ", to=" + to.string();
  if (err == EPERM || err == EXDEV || err == ENOTSUP || err == EMLINK || err == ENOSYS) {
    throw Error(ErrorCode::unavailable, "link: " + std::string(std::strerror(err)) + " (" + context + ")", err);
  }
  throw io_error("link", err, context);
}

}  // namespace quicksave::io
