// The process's log handler and level (quicksave/log.hpp). The one deliberate process-wide state
// of the library: who receives its messages is the process's choice, not a component's.
#include "format/log.hpp"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace quicksave {
namespace {

std::atomic<LogLevel> g_level{LogLevel::warning};

struct Handler {
  std::mutex mutex;
  std::shared_ptr<const LogHandler> current;  // null: the default
};
Handler& handler() {
  static Handler* h = new Handler;  // never destroyed: engine threads may log during exit
  return *h;
}

void default_handler(LogLevel level, std::string_view message) {
  if (level < LogLevel::warning) return;
  const std::string line = std::string("quicksave: ") + to_string(level) + ": " + std::string(message) + "\n";
  std::fputs(line.c_str(), stderr);  // one call: lines from several threads do not interleave
}

}  // namespace

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

void set_log_handler(LogHandler new_handler) {
  auto next = new_handler ? std::make_shared<const LogHandler>(std::move(new_handler)) : nullptr;
  std::lock_guard lock(handler().mutex);
  handler().current = std::move(next);
}

void set_log_level(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }
LogLevel log_level() { return g_level.load(std::memory_order_relaxed); }

namespace format {

bool log_enabled(LogLevel level) { return level >= log_level(); }

void log(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  std::shared_ptr<const LogHandler> current;
  {
    std::lock_guard lock(handler().mutex);
    current = handler().current;
  }
  try {
    if (current) (*current)(level, message);
    else default_handler(level, message);
  } catch (...) {
    // A handler's exception must not end a save: dropped.
  }
}

}  // namespace format
}  // namespace quicksave
