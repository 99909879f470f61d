// Text helpers shared by the writers and readers: UTF-8 decoding and the exact string and
// number spellings of the two JSON writers quicksave must match byte for byte (Rust serde_json
// for safetensors headers, Python's json module for the index), plus Python's repr() of a str
// for error messages that quote user input the way the reference does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace quicksave::format {

// Decodes the code point at s[i] and advances i. Returns false (i unchanged) on invalid UTF-8
// (overlong forms, surrogates and values above U+10FFFF are invalid).
bool next_code_point(std::string_view s, std::size_t& i, char32_t& cp);
bool is_valid_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t cp);

// serde_json: "..." with \" \\ \b \f \n \r \t, other controls as \u00xx, everything else raw.
void append_serde_json_string(std::string& out, std::string_view utf8);

// Python json.dumps(ensure_ascii=True): like serde for controls, and every non-ASCII code point
// (and DEL) as \uxxxx, astral ones as a surrogate pair.
void append_python_json_string(std::string& out, std::string_view utf8);

// Python's repr(float) / json float spelling: "1.0", "0.1", "1e-05", "1e+16", "NaN", "Infinity".
std::string python_float_text(double value, bool json_spelling);

// Python's repr(str): single quotes unless the text has ' and no ", escapes for \\, the quote,
// \n \r \t and other non-printable ASCII (\xNN); other characters as they are.
std::string python_repr(std::string_view utf8);

}  // namespace quicksave::format
