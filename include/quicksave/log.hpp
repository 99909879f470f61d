// What quicksave tells its user while it works: a crashed save it recovered, an io_uring or
// O_DIRECT fallback, a save waiting for another one's lock, a save's summary. Nothing here is an
// error (errors are thrown, or delivered through the futures); these are the events a C++ user
// would otherwise not see.
//
// The handler is one per process (logging is, by nature, the process's): set it once at start-up,
// before saving. Handlers run on the thread that logs, which may be an engine thread: keep them
// short and non-blocking. The default writes warnings and errors to stderr as
// "quicksave: warning: ...". The Python module forwards everything to logging.getLogger("quicksave").
#pragma once

#include <functional>
#include <string_view>

namespace quicksave {

enum class LogLevel { debug, info, warning, error };
// "debug", "info", "warning", "error".
const char* to_string(LogLevel level);

using LogHandler = std::function<void(LogLevel level, std::string_view message)>;

// Replaces the handler; an empty one restores the default. Thread-safe.
void set_log_handler(LogHandler handler);
// Messages below `level` are dropped before any handler runs (default: warning). Thread-safe.
void set_log_level(LogLevel level);
LogLevel log_level();

}  // namespace quicksave
