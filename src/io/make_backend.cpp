// Chooses the I/O backend. io_uring is preferred but often blocked (Docker's default seccomp
// profile, kernels with io_uring disabled), so an unusable ring is never fatal: the posix backend
// takes over and the caller is told why, to report it rather than guess at slow saves.
#include "format/log.hpp"
#include "io/backend.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {

#ifndef QUICKSAVE_HAVE_IO_URING
std::unique_ptr<IoBackend> make_uring_backend(unsigned queue_depth) {
  throw Error(ErrorCode::unavailable, "io_uring: quicksave was built without io_uring (QUICKSAVE_WITH_IO_URING=OFF)");
}
#endif

BackendKind backend_kind(IoBackendChoice choice) {
  switch (choice) {
    case IoBackendChoice::io_uring: return BackendKind::io_uring;
    case IoBackendChoice::posix: return BackendKind::posix;
    case IoBackendChoice::automatic: break;
  }
  return BackendKind::automatic;
}

std::unique_ptr<IoBackend> make_backend(const BackendOptions& options, std::string* fallback_reason) {
  if (fallback_reason != nullptr) fallback_reason->clear();
  if (options.kind == BackendKind::posix) return make_posix_backend(options.posix_threads);
  try {
    return make_uring_backend(options.queue_depth);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unavailable) throw;
    const std::string reason = std::string("io_uring unavailable: ") + e.what();
    if (fallback_reason != nullptr) *fallback_reason = reason;
    // Asked for explicitly, the fallback is worth a warning; under `automatic` it is expected
    // where io_uring is blocked (Docker's default seccomp profile).
    format::log(options.kind == BackendKind::io_uring ? LogLevel::warning : LogLevel::info, reason + "; using the posix backend (pwrite/pread on threads)");
  }
  return make_posix_backend(options.posix_threads);
}

}  // namespace quicksave::io
