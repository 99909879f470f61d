#include "quicksave/error.hpp"

#include <cstring>

namespace quicksave {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::already_exists: return "already_exists";
    case ErrorCode::corrupt: return "corrupt";
    case ErrorCode::io: return "io";
    case ErrorCode::resource_exhausted: return "resource_exhausted";
    case ErrorCode::cancelled: return "cancelled";
    case ErrorCode::unavailable: return "unavailable";
    case ErrorCode::failed_precondition: return "failed_precondition";
    case ErrorCode::busy: return "busy";
    case ErrorCode::internal: return "internal";
  }
  return "unknown";
}

Error io_error(const std::string& call, int errno_value, const std::string& context) {
  std::string message = call + ": " + std::strerror(errno_value);
  if (!context.empty()) message += " (" + context + ")";
  ErrorCode code = ErrorCode::io;
  if (errno_value == ENOENT) code = ErrorCode::not_found;
  if (errno_value == EEXIST) code = ErrorCode::already_exists;
  return Error(code, message, errno_value);
}

}  // namespace quicksave
