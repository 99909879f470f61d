// parse_size_to_int, reproducing huggingface_hub `_base.py` including Python's str.strip(),
// s[-2:].upper() and float() rules, so that every accepted and rejected spelling matches.
#include <array>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/split.hpp"

namespace quicksave {
namespace {

using CodePoints = std::vector<char32_t>;

bool is_python_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code points of Unicode decimal-digit zeros (category Nd comes in runs of ten).
constexpr std::array<char32_t, 46> kDigitZeros = {
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
    0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80,
    0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10, 0x104A0, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E950, 0x1FBF0,
};

int decimal_digit_value(char32_t c) {
  for (const char32_t zero : kDigitZeros) {
    if (c >= zero && c < zero + 10) return static_cast<int>(c - zero);
  }
  return -1;
}

CodePoints decode(std::string_view s) {
  CodePoints out;
  std::size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    if (!format::next_code_point(s, i, cp)) throw Error(ErrorCode::invalid_argument, "size string is not valid UTF-8");
    out.push_back(cp);
  }
  return out;
}

std::string encode(const CodePoints& cps) {
  std::string out;
  for (const char32_t c : cps) format::append_utf8(out, c);
  return out;
}

CodePoints strip(const CodePoints& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_python_whitespace(s[b])) ++b;
  while (e > b && is_python_whitespace(s[e - 1])) --e;
  return CodePoints(s.begin() + static_cast<std::ptrdiff_t>(b), s.begin() + static_cast<std::ptrdiff_t>(e));
}

char32_t ascii_upper(char32_t c) { return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c; }

// Python's float(str): Unicode digits and spaces are folded to ASCII, then
// [sign] (inf | infinity | nan | digits[.digits][e[sign]digits]) with '_' only between digits.
std::optional<double> python_float(const CodePoints& text) {
  std::string ascii;
  for (const char32_t c : strip(text)) {
    if (c < 0x80) {
      ascii += static_cast<char>(c);
    } else if (const int d = decimal_digit_value(c); d >= 0) {
      ascii += static_cast<char>('0' + d);
    } else {
      return std::nullopt;
    }
  }
  std::size_t i = 0;
  std::string clean;
  if (i < ascii.size() && (ascii[i] == '+' || ascii[i] == '-')) clean += ascii[i++];
  std::string rest = ascii.substr(i);
  std::string lower;
  for (char c : rest) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "inf" || lower == "infinity") return clean == "-" ? -HUGE_VAL : HUGE_VAL;
  if (lower == "nan") return std::nan("");
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  bool mantissa_digits = false, in_exponent = false, exponent_digits = false, seen_dot = false;
  for (std::size_t k = 0; k < rest.size(); ++k) {
    const char c = rest[k];
    if (is_digit(c)) {
      (in_exponent ? exponent_digits : mantissa_digits) = true;
      clean += c;
    } else if (c == '_') {
      if (k == 0 || k + 1 >= rest.size() || !is_digit(rest[k - 1]) || !is_digit(rest[k + 1])) return std::nullopt;
    } else if (c == '.' && !seen_dot && !in_exponent) {
      seen_dot = true;
      clean += c;
    } else if ((c == 'e' || c == 'E') && !in_exponent && mantissa_digits) {
      in_exponent = true;
      clean += 'e';
      if (k + 1 < rest.size() && (rest[k + 1] == '+' || rest[k + 1] == '-')) clean += rest[++k];
    } else {
      return std::nullopt;
    }
  }
  if (!mantissa_digits || (in_exponent && !exponent_digits)) return std::nullopt;
  return std::strtod(clean.c_str(), nullptr);
}

Error size_error(const std::string& message) { return Error(ErrorCode::invalid_argument, message); }

}  // namespace

std::int64_t parse_size_to_int(std::string_view size) {
  const CodePoints s = strip(decode(size));
  const std::string s_text = encode(s);
  const std::size_t unit_len = std::min<std::size_t>(2, s.size());
  CodePoints unit(s.end() - static_cast<std::ptrdiff_t>(unit_len), s.end());
  for (auto& c : unit) c = ascii_upper(c);
  const std::string unit_text = encode(unit);
  std::int64_t multiplier = 0;
  if (unit_text == "TB") multiplier = 1'000'000'000'000;
  if (unit_text == "GB") multiplier = 1'000'000'000;
  if (unit_text == "MB") multiplier = 1'000'000;
  if (unit_text == "KB") multiplier = 1'000;
  if (multiplier == 0) {
    throw size_error("Unit '" + unit_text + "' not supported. Supported units are TB, GB, MB, KB. Got '" + s_text + "'.");
  }
  const CodePoints number(s.begin(), s.end() - 2);
  const auto value = python_float(number);
  if (!value) {
    throw size_error("Could not parse the size value from '" + s_text +
                     "': could not convert string to float: " + format::python_repr(encode(strip(number))));
  }
  const double bytes = *value * static_cast<double>(multiplier);
  if (std::isnan(bytes)) throw size_error("cannot convert float NaN to integer (size '" + s_text + "')");
  if (std::isinf(bytes)) throw size_error("cannot convert float infinity to integer (size '" + s_text + "')");
  const double truncated = std::trunc(bytes);
  if (truncated >= 9.2233720368547758e18 || truncated < -9.2233720368547758e18) {
    throw size_error("size '" + s_text + "' is out of the 64-bit range");
  }
  return static_cast<std::int64_t>(truncated);
}

std::int64_t ShardSize::bytes() const {
  if (const auto* n = std::get_if<std::int64_t>(&value_)) return *n;
  return parse_size_to_int(std::get<std::string>(value_));
}

std::string ShardSize::to_string() const {
  if (const auto* n = std::get_if<std::int64_t>(&value_)) return std::to_string(*n);
  return std::get<std::string>(value_);
}

}  // namespace quicksave
