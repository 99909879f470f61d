// The one error type of quicksave's public API.
#pragma once

#include <stdexcept>
#include <string>

namespace quicksave {

enum class ErrorCode {
  invalid_argument,     // the caller passed something unusable (bad size string, bad pattern, ...)
  not_found,            // a file, directory or key that must exist does not
  already_exists,       // something that must not exist does
  corrupt,              // a file's bytes break the format's rules (header, offsets, index, ...)
  io,                   // an operating-system call failed; errno_value() says why
  resource_exhausted,   // a budget (pinned memory, in-flight saves) is used up
  cancelled,            // the caller cancelled the operation
  unavailable,          // a facility is missing here (io_uring blocked, no GPU, ...)
  failed_precondition,  // the call is valid but not in the current state
  busy,                 // another save holds the checkpoint folder (the message names the holder)
  internal,             // a quicksave bug
};

// "invalid_argument", "io", ...
const char* to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, int errno_value = 0)
      : std::runtime_error(message), code_(code), errno_(errno_value) {}

  ErrorCode code() const noexcept { return code_; }
  // The errno of the failed system call for ErrorCode::io, else 0.
  int errno_value() const noexcept { return errno_; }

 private:
  ErrorCode code_;
  int errno_;
};

// Builds an ErrorCode::io error: "<call>: <strerror(errno)> (<context>)".
Error io_error(const std::string& call, int errno_value, const std::string& context = {});

}  // namespace quicksave
