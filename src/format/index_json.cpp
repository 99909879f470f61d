// model.safetensors.index.json: a writer byte-identical to Python's json.dump(indent=2) and a
// strict reader.
#include <nlohmann/json.hpp>

#include <set>
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

using ordered_json = nlohmann::ordered_json;

Error corrupt_index(const std::string& why) { return Error(ErrorCode::corrupt, "invalid index JSON: " + why); }

MetaValue to_meta_value(const std::string& key, const ordered_json& v) {
  switch (v.type()) {
    case ordered_json::value_t::string: return v.get<std::string>();
    case ordered_json::value_t::number_integer: return v.get<std::int64_t>();
    case ordered_json::value_t::number_unsigned: {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return static_cast<double>(u);
      return static_cast<std::int64_t>(u);
    }
    case ordered_json::value_t::number_float: return v.get<double>();
    case ordered_json::value_t::boolean: return v.get<bool>();
    case ordered_json::value_t::null: return nullptr;
    default: throw corrupt_index("metadata value of \"" + key + "\" is not a string, number, boolean or null");
  }
}

}  // namespace

ShardIndex parse_index_json(std::string_view text) {
  if (!format::is_valid_utf8(text)) throw corrupt_index("not UTF-8");
  // Duplicate keys would silently keep one value: reject them, per object.
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  ordered_json::parser_callback_t reject_duplicates = [&](int, ordered_json::parse_event_t event, ordered_json& parsed) {
    switch (event) {
      case ordered_json::parse_event_t::object_start: keys_per_object.emplace_back(); break;
      case ordered_json::parse_event_t::object_end: keys_per_object.pop_back(); break;
      case ordered_json::parse_event_t::key:
        if (!keys_per_object.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default: break;
    }
    return true;
  };
  ordered_json doc;
  try {
    doc = ordered_json::parse(text.begin(), text.end(), reject_duplicates);
  } catch (const ordered_json::exception& e) {
    throw corrupt_index(e.what());
  }
  if (!duplicate.empty()) throw corrupt_index("duplicate key \"" + duplicate + "\"");
  if (!doc.is_object()) throw corrupt_index("the top level is not an object");
  ShardIndex index;
  const auto weight_map = doc.find("weight_map");
  if (weight_map == doc.end() || !weight_map->is_object()) throw corrupt_index("no \"weight_map\" object");
  for (const auto& [name, file] : weight_map->items()) {
    if (!file.is_string()) throw corrupt_index("weight_map value of \"" + name + "\" is not a string");
    index.weight_map.emplace_back(name, file.get<std::string>());
  }
  if (const auto metadata = doc.find("metadata"); metadata != doc.end() && !metadata->is_null()) {
    if (!metadata->is_object()) throw corrupt_index("\"metadata\" is not an object");
    for (const auto& [key, value] : metadata->items()) index.metadata.set(key, to_meta_value(key, value));
  }
  return index;
}

}  // namespace quicksave
