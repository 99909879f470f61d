// The QUICKSAVE_* environment variables that override engine defaults (CheckpointerOptions,
// LoaderOptions), read one way: sizes as bytes or "2GB", flags as 0/false or anything else.
#pragma once

#include <cstdint>

#include "quicksave/checkpointer.hpp"

namespace quicksave::plan {

// `fallback` when unset or empty; throws invalid_argument for a size parse_size_to_int refuses.
std::uint64_t env_size(const char* name, std::uint64_t fallback);
bool env_flag(const char* name, bool fallback);
// auto|io_uring|posix; throws invalid_argument naming the variable for anything else.
IoBackendChoice env_backend(const char* name, IoBackendChoice fallback);

}  // namespace quicksave::plan
