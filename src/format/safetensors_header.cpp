// safetensors header encoding and decoding. The writer follows safetensors' `prepare` and
// `serialize` (tensor.rs); the reader applies `read_metadata` + `Metadata::validate` in the same
// order, plus duplicate-name and metadata checks the reference leaves out.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <set>

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave {
namespace {

bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

void append_u64(std::string& out, std::uint64_t v) { out += std::to_string(v); }

std::string backticked(std::string_view name) { return "`" + std::string(name) + "`"; }

}  // namespace

std::uint64_t tensor_nbytes(DType dtype, std::span<const std::uint64_t> shape) {
  std::uint64_t numel = 1;
  for (const auto dim : shape) {
    if (!checked_mul(numel, dim, numel)) throw Error(ErrorCode::invalid_argument, "tensor shape product overflows 64 bits");
  }
  std::uint64_t bits;
  if (!checked_mul(numel, static_cast<std::uint64_t>(dtype_bits(dtype)), bits)) {
    throw Error(ErrorCode::invalid_argument, "tensor bit count overflows 64 bits");
  }
  if (bits % 8 != 0) {
    throw Error(ErrorCode::invalid_argument,
                "a " + std::string(dtype_name(dtype)) + " tensor of " + std::to_string(numel) +
                    " elements is not a whole number of bytes");
  }
  return bits / 8;
}

FileLayout layout_file(std::span<const TensorSpec> tensors, const std::optional<StringMap>& metadata) {
  std::vector<const TensorSpec*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  // safetensors `prepare`: dtype descending in enum order, then name ascending (bytes).
  std::sort(order.begin(), order.end(), [](const TensorSpec* a, const TensorSpec* b) {
    if (a->dtype != b->dtype) return a->dtype > b->dtype;
    return a->name < b->name;
  });
  std::set<std::string_view> names;
  for (const auto* t : order) {
    if (t->name == "__metadata__") throw Error(ErrorCode::invalid_argument, "a tensor cannot be named `__metadata__`");
    if (!names.insert(t->name).second) throw Error(ErrorCode::invalid_argument, "duplicate tensor name " + backticked(t->name));
  }

  FileLayout layout;
  std::string json = "{";
  bool first = true;
  if (metadata) {
    StringMap sorted = *metadata;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 1; i < sorted.size(); ++i) {
      if (sorted[i].first == sorted[i - 1].first) {
        throw Error(ErrorCode::invalid_argument, "duplicate metadata key " + backticked(sorted[i].first));
      }
    }
    json += "\"__metadata__\":{";
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      if (i) json += ',';
      format::append_serde_json_string(json, sorted[i].first);
      json += ':';
      format::append_serde_json_string(json, sorted[i].second);
    }
    json += '}';
    first = false;
  }
  std::uint64_t offset = 0;
  layout.tensors.reserve(order.size());
  for (const auto* t : order) {
    const std::uint64_t nbytes = tensor_nbytes(t->dtype, t->shape);
    if (!first) json += ',';
    first = false;
    format::append_serde_json_string(json, t->name);
    json += ":{\"dtype\":\"";
    json += dtype_name(t->dtype);
    json += "\",\"shape\":[";
    for (std::size_t d = 0; d < t->shape.size(); ++d) {
      if (d) json += ',';
      append_u64(json, t->shape[d]);
    }
    json += "],\"data_offsets\":[";
    append_u64(json, offset);
    json += ',';
    append_u64(json, offset + nbytes);
    json += "]}";
    layout.tensors.push_back(TensorEntry{t->name, t->dtype, t->shape, offset, offset + nbytes});
    offset += nbytes;
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kMaxHeaderBytes) {
    throw Error(ErrorCode::invalid_argument, "safetensors header of " + std::to_string(json.size()) +
                                                 " bytes exceeds the limit of " + std::to_string(kMaxHeaderBytes));
  }
  layout.header.resize(8);
  std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) layout.header[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  layout.header += json;
  layout.data_bytes = offset;
  return layout;
}

std::string_view to_string(HeaderRule rule) noexcept {
  switch (rule) {
    case HeaderRule::header_too_small: return "header_too_small";
    case HeaderRule::header_too_large: return "header_too_large";
    case HeaderRule::invalid_header_length: return "invalid_header_length";
    case HeaderRule::invalid_utf8: return "invalid_utf8";
    case HeaderRule::invalid_json: return "invalid_json";
    case HeaderRule::duplicate_name: return "duplicate_name";
    case HeaderRule::invalid_metadata: return "invalid_metadata";
    case HeaderRule::unknown_dtype: return "unknown_dtype";
    case HeaderRule::invalid_offset: return "invalid_offset";
    case HeaderRule::validation_overflow: return "validation_overflow";
    case HeaderRule::misaligned_slice: return "misaligned_slice";
    case HeaderRule::tensor_invalid_info: return "tensor_invalid_info";
    case HeaderRule::metadata_incomplete_buffer: return "metadata_incomplete_buffer";
  }
  return "unknown";
}

std::variant<std::uint64_t, HeaderProblem> check_header_length(std::span<const std::byte> first8,
                                                                std::uint64_t file_size) {
  if (file_size < 8 || first8.size() < 8) {
    return HeaderProblem{HeaderRule::header_too_small, "header too small: the file has " + std::to_string(file_size) + " bytes"};
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint8_t>(first8[i]);
  if (n > kMaxHeaderBytes) {
    return HeaderProblem{HeaderRule::header_too_large,
                         "header too large: " + std::to_string(n) + " bytes, the limit is " + std::to_string(kMaxHeaderBytes)};
  }
  if (8 + n > file_size) {
    return HeaderProblem{HeaderRule::invalid_header_length, "invalid header length: " + std::to_string(n) +
                                                                " bytes of header in a file of " + std::to_string(file_size)};
  }
  return n;
}

namespace {

using nlohmann::json;

// A SAX reader for exactly the header schema, so that duplicate keys, wrong types and unknown
// dtypes are caught with their names instead of being silently coerced or overwritten.
class HeaderSax : public nlohmann::json_sax<json> {
 public:
  std::optional<HeaderProblem> problem;
  std::vector<TensorEntry> tensors;
  std::optional<StringMap> metadata;

  bool null() override { return scalar("null"); }
  bool boolean(bool) override { return scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v >= 0) return number_unsigned(static_cast<number_unsigned_t>(v));
    return scalar("a negative number");
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (skip_depth_ > 0) return true;
    if (state_ == State::shape) {
      // Tensor libraries index with int64: a larger dimension could not be loaded.
      if (v > static_cast<number_unsigned_t>(INT64_MAX)) {
        return fail(HeaderRule::invalid_json, "shape of tensor " + backticked(current_.name) + " has the dimension " + std::to_string(v) +
                                                  ", larger than 2^63-1");
      }
      current_.shape.push_back(v);
      return true;
    }
    if (state_ == State::offsets) {
      if (offsets_seen_ >= 2) return fail(HeaderRule::invalid_json, "data_offsets of tensor " + backticked(current_.name) + " has more than 2 entries");
      (offsets_seen_ == 0 ? current_.begin : current_.end) = v;
      ++offsets_seen_;
      return true;
    }
    return scalar("a number");
  }
  bool number_float(number_float_t, const string_t&) override { return scalar("a non-integer number"); }
  bool string(string_t& s) override {
    if (skip_depth_ > 0) return true;
    if (state_ == State::metadata_value) {
      metadata->emplace_back(std::move(pending_key_), std::move(s));
      state_ = State::metadata;
      return true;
    }
    if (state_ == State::tensor_value && pending_key_ == "dtype") {
      const auto dtype = dtype_from_name(s);
      if (!dtype) return fail(HeaderRule::unknown_dtype, "unknown dtype \"" + s + "\" for tensor " + backticked(current_.name));
      current_.dtype = *dtype;
      has_dtype_ = true;
      state_ = State::tensor;
      return true;
    }
    return scalar("a string");
  }
  bool binary(binary_t&) override { return scalar("binary"); }

  bool start_object(std::size_t) override {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    switch (state_) {
      case State::root: state_ = State::top; return true;
      case State::top_value:
        if (pending_key_ == "__metadata__") {
          metadata.emplace();
          metadata_keys_.clear();
          state_ = State::metadata;
        } else {
          current_ = TensorEntry{};
          current_.name = pending_key_;
          tensor_keys_.clear();
          has_dtype_ = has_shape_ = false;
          offsets_seen_ = 0;
          state_ = State::tensor;
        }
        return true;
      case State::tensor_value:
        if (is_known_tensor_field()) return wrong_type("an object");
        skip_depth_ = 1;
        return true;
      default: return scalar("an object");
    }
  }
  bool key(string_t& k) override {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::top:
        if (!top_keys_.insert(k).second) return fail(HeaderRule::duplicate_name, "duplicate tensor name " + backticked(k));
        pending_key_ = std::move(k);
        state_ = State::top_value;
        return true;
      case State::metadata:
        if (!metadata_keys_.insert(k).second) return fail(HeaderRule::duplicate_name, "duplicate metadata key " + backticked(k));
        pending_key_ = std::move(k);
        state_ = State::metadata_value;
        return true;
      case State::tensor:
        if (!tensor_keys_.insert(k).second) {
          return fail(HeaderRule::invalid_json, "duplicate field `" + k + "` in tensor " + backticked(current_.name));
        }
        pending_key_ = std::move(k);
        state_ = State::tensor_value;
        return true;
      default: return fail(HeaderRule::invalid_json, "unexpected key");
    }
  }
  bool end_object() override {
    if (skip_depth_ > 0) {
      if (--skip_depth_ == 0) state_ = State::tensor;
      return true;
    }
    switch (state_) {
      case State::top: state_ = State::done; return true;
      case State::metadata: state_ = State::top; return true;
      case State::tensor:
        if (!has_dtype_) return fail(HeaderRule::invalid_json, "missing field `dtype` in tensor " + backticked(current_.name));
        if (!has_shape_) return fail(HeaderRule::invalid_json, "missing field `shape` in tensor " + backticked(current_.name));
        if (offsets_seen_ != 2) {
          return fail(HeaderRule::invalid_json, "missing or short field `data_offsets` in tensor " + backticked(current_.name));
        }
        tensors.push_back(std::move(current_));
        state_ = State::top;
        return true;
      default: return fail(HeaderRule::invalid_json, "unexpected end of object");
    }
  }
  bool start_array(std::size_t) override {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    if (state_ == State::tensor_value) {
      if (pending_key_ == "shape") {
        has_shape_ = true;
        state_ = State::shape;
        return true;
      }
      if (pending_key_ == "data_offsets") {
        state_ = State::offsets;
        return true;
      }
      if (pending_key_ == "dtype") return wrong_type("an array");
      skip_depth_ = 1;
      return true;
    }
    return scalar("an array");
  }
  bool end_array() override {
    if (skip_depth_ > 0) {
      if (--skip_depth_ == 0) state_ = State::tensor;
      return true;
    }
    if (state_ == State::shape || state_ == State::offsets) {
      state_ = State::tensor;
      return true;
    }
    return fail(HeaderRule::invalid_json, "unexpected end of array");
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    if (!problem) problem = HeaderProblem{HeaderRule::invalid_json, "invalid JSON in header at byte " + std::to_string(position) + ": " + ex.what()};
    return false;
  }

 private:
  enum class State { root, top, top_value, metadata, metadata_value, tensor, tensor_value, shape, offsets, done };

  bool is_known_tensor_field() const {
    return pending_key_ == "dtype" || pending_key_ == "shape" || pending_key_ == "data_offsets";
  }
  bool fail(HeaderRule rule, std::string message) {
    if (!problem) problem = HeaderProblem{rule, std::move(message)};
    return false;
  }
  bool wrong_type(const char* what) {
    return fail(HeaderRule::invalid_json, std::string("field `") + pending_key_ + "` of tensor " + backticked(current_.name) +
                                              " is " + what);
  }
  // A scalar arrived: fine inside skipped or unknown fields, an error anywhere else.
  bool scalar(const char* what) {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::tensor_value:
        if (is_known_tensor_field()) return wrong_type(what);
        state_ = State::tensor;
        return true;
      case State::metadata_value:
        return fail(HeaderRule::invalid_metadata,
                    "__metadata__ value of " + backticked(pending_key_) + " is " + what + ", not a string");
      case State::top_value:
        if (pending_key_ == "__metadata__" && std::string_view(what) == "null") {
          state_ = State::top;  // serde reads `"__metadata__": null` as no metadata
          return true;
        }
        if (pending_key_ == "__metadata__") return fail(HeaderRule::invalid_metadata, std::string("__metadata__ is ") + what);
        return fail(HeaderRule::invalid_json, "tensor " + backticked(pending_key_) + " is " + what + ", not an object");
      case State::shape:
        return fail(HeaderRule::invalid_json, std::string("shape of tensor ") + backticked(current_.name) + " holds " + what);
      case State::offsets:
        return fail(HeaderRule::invalid_json, std::string("data_offsets of tensor ") + backticked(current_.name) + " holds " + what);
      default:
        return fail(HeaderRule::invalid_json, std::string("the header is ") + what + ", not an object");
    }
  }

  State state_ = State::root;
  int skip_depth_ = 0;
  std::string pending_key_;
  TensorEntry current_;
  bool has_dtype_ = false;
  bool has_shape_ = false;
  int offsets_seen_ = 0;
  std::set<std::string> top_keys_, metadata_keys_, tensor_keys_;
};

}  // namespace

std::variant<Header, HeaderProblem> check_header(std::string_view json_bytes, std::uint64_t file_size) {
  if (!format::is_valid_utf8(json_bytes)) return HeaderProblem{HeaderRule::invalid_utf8, "invalid UTF-8 in header"};
  // nlohmann skips a UTF-8 byte order mark; serde_json (the reference) does not: "expected value".
  if (json_bytes.starts_with("\xEF\xBB\xBF")) {
    return HeaderProblem{HeaderRule::invalid_json, "invalid JSON in header: expected value at line 1 column 1 (a UTF-8 byte order mark)"};
  }
  HeaderSax sax;
  const bool ok = json::sax_parse(json_bytes.begin(), json_bytes.end(), &sax);
  if (!ok || sax.problem) {
    if (sax.problem) return *sax.problem;
    return HeaderProblem{HeaderRule::invalid_json, "invalid JSON in header"};
  }
  Header header;
  header.header_bytes = json_bytes.size();
  header.metadata = std::move(sax.metadata);
  header.tensors = std::move(sax.tensors);
  std::stable_sort(header.tensors.begin(), header.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  std::uint64_t expected_begin = 0;
  for (const auto& t : header.tensors) {
    if (t.begin != expected_begin || t.end < t.begin) {
      return HeaderProblem{HeaderRule::invalid_offset, "invalid offset for tensor " + backticked(t.name) + ": [" + std::to_string(t.begin) +
                                                           ", " + std::to_string(t.end) + "), expected to start at " +
                                                           std::to_string(expected_begin)};
    }
    expected_begin = t.end;
    std::uint64_t numel = 1;
    for (const auto dim : t.shape) {
      if (!checked_mul(numel, dim, numel)) return HeaderProblem{HeaderRule::validation_overflow, "shape of tensor " + backticked(t.name) + " overflows"};
    }
    std::uint64_t bits;
    if (!checked_mul(numel, static_cast<std::uint64_t>(dtype_bits(t.dtype)), bits)) {
      return HeaderProblem{HeaderRule::validation_overflow, "bit count of tensor " + backticked(t.name) + " overflows"};
    }
    if (bits % 8 != 0) return HeaderProblem{HeaderRule::misaligned_slice, "tensor " + backticked(t.name) + " is not a whole number of bytes"};
    if (t.end - t.begin != bits / 8) {
      return HeaderProblem{HeaderRule::tensor_invalid_info,
                           "invalid shape, data type, or offset for tensor " + backticked(t.name) + ": " + std::to_string(t.end - t.begin) +
                               " bytes, the shape and dtype need " + std::to_string(bits / 8)};
    }
  }
  const std::uint64_t data_start = 8 + header.header_bytes;
  if (expected_begin > file_size || data_start + expected_begin != file_size) {
    return HeaderProblem{HeaderRule::metadata_incomplete_buffer,
                         "incomplete metadata, file not fully covered: header and tensors cover " +
                             std::to_string(data_start + expected_begin) + " bytes of " + std::to_string(file_size)};
  }
  return header;
}

Header decode_header(std::span<const std::byte> prefix, std::uint64_t file_size) {
  auto length = check_header_length(prefix, file_size);
  if (auto* p = std::get_if<HeaderProblem>(&length)) throw Error(ErrorCode::corrupt, p->message);
  const auto n = std::get<std::uint64_t>(length);
  if (prefix.size() < 8 + n) {
    throw Error(ErrorCode::internal, "decode_header needs the first " + std::to_string(8 + n) + " bytes of the file");
  }
  std::string_view json_bytes(reinterpret_cast<const char*>(prefix.data()) + 8, n);
  auto parsed = check_header(json_bytes, file_size);
  if (auto* p = std::get_if<HeaderProblem>(&parsed)) throw Error(ErrorCode::corrupt, p->message);
  return std::move(std::get<Header>(parsed));
}

}  // namespace quicksave
