// model.safetensors.index.json: a writer byte-identical to Python's json.dump(indent=2) and a
// strict reader.
#include <nlohmann/json.hpp>

#include <optional>
#include <unordered_set>
#include <vector>

#include "format/text.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave {
namespace {

void append_meta_value(std::string& out, const MetaValue& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          format::append_python_json_string(out, v);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          out += std::to_string(v);
        } else if constexpr (std::is_same_v<T, double>) {
          out += format::python_float_text(v, /*json_spelling=*/true);
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else {
          out += "null";
        }
      },
      value);
}

// Writes `{ "k": v, ... }` at nesting level `level` (2-space indent per level), Python style.
template <class Entries, class AppendValue>
void append_object(std::string& out, const Entries& entries, int level, AppendValue append_value) {
  if (entries.empty()) {
    out += "{}";
    return;
  }
  const std::string inner(static_cast<std::size_t>(2 * (level + 1)), ' ');
  out += "{\n";
  bool first = true;
  for (const auto& [key, value] : entries) {
    if (!first) out += ",\n";
    first = false;
    out += inner;
    format::append_python_json_string(out, key);
    out += ": ";
    append_value(out, value);
  }
  out += "\n" + std::string(static_cast<std::size_t>(2 * level), ' ') + "}";
}

}  // namespace

std::string index_to_json(const ShardIndex& index) {
  std::string out = "{\n  \"metadata\": ";
  append_object(out, index.metadata.entries(), 1, append_meta_value);
  out += ",\n  \"weight_map\": ";
  append_object(out, index.weight_map, 1,
                [](std::string& o, const std::string& file) { format::append_python_json_string(o, file); });
  out += "\n}";
  return out;
}

namespace {

using nlohmann::json;

Error corrupt_index(const std::string& why) { return Error(ErrorCode::corrupt, "invalid index JSON: " + why); }

// A SAX reader that builds the ShardIndex directly, in the file's order, in linear time.
// (nlohmann::ordered_json looks keys up by a linear scan, so parsing a weight_map of n entries
// was quadratic: 80k entries took 8 s.) It accepts and rejects exactly what parsing into
// ordered_json did, with the same messages: duplicate keys in any object, then the schema
// checks in the same order (top level, weight_map, its values, metadata, its values).
class IndexSax : public nlohmann::json_sax<json> {
 public:
  std::string parse_error_message;
  std::string duplicate;  // the first duplicate key found
  bool top_is_object = false;
  std::optional<bool> weight_map_is_object, metadata_is_object_or_null;
  std::optional<std::string> weight_map_bad_value;  // the first name whose value is not a string
  std::optional<std::string> metadata_bad_value;    // the first key whose value is not a scalar
  ShardIndex index;

  bool null() override { return scalar(nullptr); }
  bool boolean(bool v) override { return scalar(v); }
  bool number_integer(number_integer_t v) override { return scalar(static_cast<std::int64_t>(v)); }
  bool number_unsigned(number_unsigned_t v) override {
    if (v > static_cast<std::uint64_t>(INT64_MAX)) return scalar(static_cast<double>(v));
    return scalar(static_cast<std::int64_t>(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return scalar(static_cast<double>(v)); }
  bool string(string_t& v) override { return scalar(std::move(v)); }
  bool binary(binary_t&) override { return scalar(nullptr); }  // not produced by the JSON parser

  bool start_object(std::size_t) override {
    open(Kind::object);
    return true;
  }
  bool key(string_t& k) override {
    Frame& f = frames_.back();
    if (!f.keys.insert(k).second && duplicate.empty()) duplicate = k;
    f.key = std::move(k);
    return true;
  }
  bool end_object() override {
    close();
    return true;
  }
  bool start_array(std::size_t) override {
    open(Kind::array);
    return true;
  }
  bool end_array() override {
    close();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    parse_error_message = ex.what();
    return false;
  }

 private:
  enum class Kind { object, array };
  enum class Role { top, weight_map, metadata, other };
  struct Frame {
    Kind kind;
    Role role;
    std::unordered_set<std::string> keys;
    std::string key;  // the key whose value comes next (objects)
  };

  // What a value at the current position is: the top level, the top object's "weight_map" or
  // "metadata", an entry of one of those, or anything else (ignored, checked only for duplicates).
  enum class Slot { top, weight_map, metadata, weight_map_entry, metadata_entry, other };
  Slot slot() const {
    if (frames_.empty()) return Slot::top;
    const Frame& f = frames_.back();
    if (f.kind != Kind::object) return Slot::other;
    if (f.role == Role::top && frames_.size() == 1) {
      if (f.key == "weight_map") return Slot::weight_map;
      if (f.key == "metadata") return Slot::metadata;
    }
    if (f.role == Role::weight_map) return Slot::weight_map_entry;
    if (f.role == Role::metadata) return Slot::metadata_entry;
    return Slot::other;
  }

  void open(Kind kind) {
    Role role = Role::other;
    switch (slot()) {
      case Slot::top:
        top_is_object = kind == Kind::object;
        role = top_is_object ? Role::top : Role::other;
        break;
      case Slot::weight_map:
        weight_map_is_object = kind == Kind::object;
        if (kind == Kind::object) role = Role::weight_map;
        break;
      case Slot::metadata:
        metadata_is_object_or_null = kind == Kind::object;
        if (kind == Kind::object) role = Role::metadata;
        break;
      case Slot::weight_map_entry: not_a_string(); break;
      case Slot::metadata_entry: not_a_scalar(); break;
      case Slot::other: break;
    }
    frames_.push_back(Frame{kind, role, {}, {}});
  }
  void close() { frames_.pop_back(); }

  void not_a_string() {
    if (!weight_map_bad_value) weight_map_bad_value = frames_.back().key;
  }
  void not_a_scalar() {
    if (!metadata_bad_value) metadata_bad_value = frames_.back().key;
  }

  bool scalar(MetaValue v) {
    switch (slot()) {
      case Slot::top: break;
      case Slot::weight_map: weight_map_is_object = false; break;
      case Slot::metadata: metadata_is_object_or_null = std::holds_alternative<std::nullptr_t>(v); break;
      case Slot::weight_map_entry:
        if (auto* file = std::get_if<std::string>(&v)) {
          index.weight_map.emplace_back(frames_.back().key, std::move(*file));
        } else {
          not_a_string();
        }
        break;
      case Slot::metadata_entry: index.metadata.set(frames_.back().key, std::move(v)); break;
      case Slot::other: break;
    }
    return true;
  }

  std::vector<Frame> frames_;
};

}  // namespace

ShardIndex parse_index_json(std::string_view text) {
  if (!format::is_valid_utf8(text)) throw corrupt_index("not UTF-8");
  // nlohmann skips a UTF-8 byte order mark; Python's json (the reference's reader) rejects it.
  if (text.starts_with("\xEF\xBB\xBF")) throw corrupt_index("the file starts with a UTF-8 byte order mark (BOM)");
  IndexSax sax;
  if (!json::sax_parse(text.begin(), text.end(), &sax)) throw corrupt_index(sax.parse_error_message);
  if (!sax.duplicate.empty()) throw corrupt_index("duplicate key \"" + sax.duplicate + "\"");
  if (!sax.top_is_object) throw corrupt_index("the top level is not an object");
  if (!sax.weight_map_is_object.value_or(false)) throw corrupt_index("no \"weight_map\" object");
  if (sax.weight_map_bad_value) throw corrupt_index("weight_map value of \"" + *sax.weight_map_bad_value + "\" is not a string");
  if (!sax.metadata_is_object_or_null.value_or(true)) throw corrupt_index("\"metadata\" is not an object");
  if (sax.metadata_bad_value) {
    throw corrupt_index("metadata value of \"" + *sax.metadata_bad_value + "\" is not a string, number, boolean or null");
  }
  return std::move(sax.index);
}

}  // namespace quicksave
