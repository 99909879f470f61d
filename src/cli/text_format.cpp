// Human-readable numbers and aligned text tables.
#include "cli/text_format.hpp"

#include <algorithm>
#include <cstdio>

namespace quicksave::cli {

std::string fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string human_bytes(std::uint64_t bytes) {
  static const char* const kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  if (bytes < 1000) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1000 && unit < 5) {
    value /= 1000;
    ++unit;
  }
  return fixed(value, value < 10 ? 2 : value < 100 ? 1 : 0) + " " + kUnits[unit];
}

std::string human_seconds(double seconds) {
  if (seconds < 0.001) return fixed(seconds * 1e3, 3) + " ms";
  if (seconds < 1) return fixed(seconds * 1e3, seconds < 0.01 ? 2 : seconds < 0.1 ? 1 : 0) + " ms";
  return fixed(seconds, 2) + " s";
}

std::string shape_string(std::span<const std::uint64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

Table::Table(std::vector<std::string> header, std::vector<std::size_t> right_aligned) : right_(std::move(right_aligned)) {
  rows_.push_back(std::move(header));
}

void Table::add(std::vector<std::string> row) {
  for (auto& cell : row) cell = printable(cell);  // names come from the files
  rows_.push_back(std::move(row));
}

std::string Table::str() const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::size_t pad = width[c] - row[c].size();
      const bool right = std::find(right_.begin(), right_.end(), c) != right_.end();
      if (c) line += "  ";
      if (right) line += std::string(pad, ' ');
      line += row[c];
      if (!right && c + 1 < row.size()) line += std::string(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace quicksave::cli
