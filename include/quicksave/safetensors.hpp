// The safetensors file format: header encoding (byte-exact to the reference writer) and
// decoding with the reference reader's validation rules, plus a few stricter ones.
//
// Layout: [u64 little-endian N][N bytes of UTF-8 JSON, space-padded to a multiple of 8][data].
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "quicksave/dtype.hpp"

namespace quicksave {

// Headers larger than this are refused by writer and reader alike (the safetensors crate's limit).
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

using StringMap = std::vector<std::pair<std::string, std::string>>;

// One tensor as a header describes it. Offsets are relative to the data buffer, end exclusive.
struct TensorEntry {
  std::string name;
  DType dtype{};
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  std::uint64_t nbytes() const { return end - begin; }
  friend bool operator==(const TensorEntry&, const TensorEntry&) = default;
};

struct Header {
  std::vector<TensorEntry> tensors;      // in data-offset order
  std::optional<StringMap> metadata;     // "__metadata__", absent when the file has none
  std::uint64_t header_bytes = 0;        // N: the JSON length including padding
  std::uint64_t data_start() const { return 8 + header_bytes; }
  std::uint64_t data_bytes() const { return tensors.empty() ? 0 : tensors.back().end; }
};

// What a writer needs to know of a tensor to lay out a file.
struct TensorSpec {
  std::string name;
  DType dtype{};
  std::vector<std::uint64_t> shape;
};

// The result of laying out a file: the bytes to write first and where each tensor goes.
struct FileLayout {
  std::string header;                 // 8-byte length + padded JSON: the file's first bytes
  std::vector<TensorEntry> tensors;   // file order (dtype descending, then name), with offsets
  std::uint64_t data_bytes = 0;       // sum of the tensors' byte sizes
  std::uint64_t file_bytes() const { return header.size() + data_bytes; }
};

// Bytes of a tensor of this dtype and shape; throws invalid_argument when the product overflows
// or the bit count is not a whole number of bytes.
std::uint64_t tensor_nbytes(DType dtype, std::span<const std::uint64_t> shape);

// Lays out a file exactly as safetensors' `serialize` does. Metadata is written with its keys
// sorted (the reference writes them in hash order, i.e. any order). Throws invalid_argument for
// duplicate names, names equal to "__metadata__", or a header over kMaxHeaderBytes.
FileLayout layout_file(std::span<const TensorSpec> tensors, const std::optional<StringMap>& metadata);

// Decoding. The reader rules, in the order the reference applies them (the first broken one wins).
enum class HeaderRule {
  header_too_small,          // file shorter than 8 bytes
  header_too_large,          // N > kMaxHeaderBytes
  invalid_header_length,     // 8 + N beyond the end of the file
  invalid_utf8,              // the header is not UTF-8
  invalid_json,              // not JSON, or not the schema (types, arity, unknown dtype, ...)
  duplicate_name,            // a key appears twice (the reference lets the last win)
  invalid_metadata,          // "__metadata__" is not a string → string map
  unknown_dtype,             // a dtype code safetensors does not define
  invalid_offset,            // tensors not contiguous from 0 in offset order, or end < begin
  validation_overflow,       // shape product or bit count overflows 64 bits
  misaligned_slice,          // bit count not a multiple of 8
  tensor_invalid_info,       // shape × dtype ≠ end − begin
  metadata_incomplete_buffer,// 8 + N + data ≠ file size (truncated data or trailing bytes)
};
std::string_view to_string(HeaderRule rule) noexcept;

struct HeaderProblem {
  HeaderRule rule;
  std::string message;   // says what is wrong and where, e.g. "invalid offset for tensor `w`"
};

// Step 1 of decoding: reads N from the first 8 bytes. `file_size` is the whole file's size.
// Returns N or the problem.
std::variant<std::uint64_t, HeaderProblem> check_header_length(std::span<const std::byte> first8,
                                                                std::uint64_t file_size);
// Step 2: parses and validates the N header bytes against a file of `file_size` bytes.
std::variant<Header, HeaderProblem> check_header(std::string_view json_bytes, std::uint64_t file_size);

// Both steps over a buffer holding at least the first 8 + N bytes of a file of `file_size`
// bytes (pass the whole file, or its prefix). Throws Error(corrupt) naming the rule.
Header decode_header(std::span<const std::byte> prefix, std::uint64_t file_size);

}  // namespace quicksave
