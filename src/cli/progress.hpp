// A progress bar on stderr for long work, drawn only when stderr is a terminal (so logs, pipes
// and tests never see carriage returns), redrawn at most ten times a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace quicksave::cli {

class ProgressBar {
 public:
  // `total` in bytes; 0 draws no bar (nothing to measure).
  ProgressBar(std::string label, std::uint64_t total);
  ~ProgressBar();  // finish()
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `done` bytes so far; `detail` is shown after the figures (e.g. "staged 80%").
  void update(std::uint64_t done, const std::string& detail = {});
  // Erases the bar so that the next line of output starts clean.
  void finish();
  bool enabled() const { return enabled_; }

  // True when stderr is a terminal (and TERM is not "dumb").
  static bool terminal();

 private:
  std::string label_;
  std::uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace quicksave::cli
