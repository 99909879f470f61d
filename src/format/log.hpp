// The library's side of quicksave/log.hpp: log(level, message) hands a message to the user's
// handler (or the default stderr one) when its level is enabled.
#pragma once

#include <string_view>

#include "quicksave/log.hpp"

namespace quicksave::format {

void log(LogLevel level, std::string_view message);
// True when a message at `level` would be handed to the handler (build costly messages only then).
bool log_enabled(LogLevel level);

}  // namespace quicksave::format
