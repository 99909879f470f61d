// QUICKSAVE_* overrides (see env.hpp).
#include "plan/env.hpp"

#include <cstdlib>
#include <string>

#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave::plan {

std::uint64_t env_size(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  const std::string text(v);
  if (text.find_first_not_of("0123456789") == std::string::npos) return std::stoull(text);
  return static_cast<std::uint64_t>(parse_size_to_int(text));
}

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::string(v) != "0" && std::string(v) != "false";
}

IoBackendChoice env_backend(const char* name, IoBackendChoice fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  const std::string backend(v);
  if (backend == "io_uring") return IoBackendChoice::io_uring;
  if (backend == "posix") return IoBackendChoice::posix;
  if (backend == "auto") return IoBackendChoice::automatic;
  throw Error(ErrorCode::invalid_argument, std::string(name) + " must be auto, io_uring or posix, got " + backend);
}

}  // namespace quicksave::plan
