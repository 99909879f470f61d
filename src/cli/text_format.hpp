// Human-readable numbers and aligned text tables for the commands' output.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quicksave::cli {

// Decimal units, like the size strings the tool accepts: "4.17 GB", "812 kB", "17 B".
std::string human_bytes(std::uint64_t bytes);
// "0.42 ms", "812 ms", "3.21 s".
std::string human_seconds(double seconds);
// "[4096, 11008]" ("[]" for a 0-d tensor).
std::string shape_string(std::span<const std::uint64_t> shape);
// `text` for one line of a terminal: control characters (NUL, newline, ESC, DEL, ...) become
// \xNN, so a name cannot cut the output or forge lines; everything else is kept.
std::string printable(std::string_view text);
// A fixed number of decimals.
std::string fixed(double value, int decimals);

// Columns padded to their widest cell; columns listed in `right_aligned` (numbers) align right.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<std::size_t> right_aligned = {});
  void add(std::vector<std::string> row);
  std::string str() const;  // every line ends with '\n'

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::size_t> right_;
};

}  // namespace quicksave::cli
