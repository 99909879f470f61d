#include "format/manifest.hpp"

#include <nlohmann/json.hpp>

#include "format/checksum.hpp"
#include "quicksave/error.hpp"

namespace quicksave::format {
namespace {

using nlohmann::json;

[[noreturn]] void corrupt(const std::string& why) { throw Error(ErrorCode::corrupt, "checksum manifest: " + why); }

const json& member(const json& object, const char* key, json::value_t type, const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end()) corrupt(where + " has no \"" + key + "\"");
  const bool ok = it->type() == type || (type == json::value_t::number_unsigned && it->is_number_unsigned());
  if (!ok) corrupt(where + "'s \"" + key + "\" has the wrong type");
  return *it;
}

std::uint64_t hex_hash(const json& value, const std::string& where) {
  if (!value.is_string()) corrupt(where + " is not a hash string");
  const auto hash = hash_from_hex(value.get_ref<const std::string&>());
  if (!hash) corrupt(where + " is not 16 lowercase hex digits");
  return *hash;
}

}  // namespace

std::string manifest_to_json(const Manifest& m) {
  json files = json::array();
  for (const auto& f : m.files) {
    json tensors = json::array();
    for (const auto& t : f.tensors) {
      json ranges = json::array();
      for (const auto& r : t.ranges) ranges.push_back(json::array({r.begin, r.end, hash_to_hex(r.hash)}));
      tensors.push_back(json{{"name", t.name}, {"ranges", std::move(ranges)}});
    }
    files.push_back(json{{"file", f.file}, {"bytes", f.bytes}, {"header_xxh3", hash_to_hex(f.header_hash)}, {"tensors", std::move(tensors)}});
  }
  json out = {{"format", "quicksave-manifest"}, {"version", 1}, {"hash", "xxh3-64"}};
  if (m.index_file) out["index"] = json{{"file", *m.index_file}, {"xxh3", hash_to_hex(m.index_hash)}};
  out["files"] = std::move(files);
  return out.dump() + "\n";
}

Manifest parse_manifest_json(std::string_view text) {
  if (text.size() > kMaxManifestBytes) corrupt("larger than " + std::to_string(kMaxManifestBytes) + " bytes");
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) corrupt("not a JSON object");
  if (member(doc, "format", json::value_t::string, "the manifest") != "quicksave-manifest") corrupt("unknown format");
  const auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_unsigned() || version->get<std::uint64_t>() != 1) corrupt("unsupported version");
  if (member(doc, "hash", json::value_t::string, "the manifest") != "xxh3-64") corrupt("unsupported hash");
  Manifest m;
  if (const auto index = doc.find("index"); index != doc.end()) {
    if (!index->is_object()) corrupt("\"index\" is not an object");
    m.index_file = member(*index, "file", json::value_t::string, "the index entry").get<std::string>();
    m.index_hash = hex_hash(member(*index, "xxh3", json::value_t::string, "the index entry"), "the index hash");
  }
  for (const json& f : member(doc, "files", json::value_t::array, "the manifest")) {
    if (!f.is_object()) corrupt("a file entry is not an object");
    ManifestFile file;
    file.file = member(f, "file", json::value_t::string, "a file entry").get<std::string>();
    const std::string where = "the entry of " + file.file;
    file.bytes = member(f, "bytes", json::value_t::number_unsigned, where).get<std::uint64_t>();
    file.header_hash = hex_hash(member(f, "header_xxh3", json::value_t::string, where), where + "'s header hash");
    for (const json& t : member(f, "tensors", json::value_t::array, where)) {
      if (!t.is_object()) corrupt(where + " has a tensor that is not an object");
      ManifestTensor tensor;
      tensor.name = member(t, "name", json::value_t::string, where + "'s tensor").get<std::string>();
      const std::string tensor_where = "tensor " + tensor.name + " of " + file.file;
      for (const json& r : member(t, "ranges", json::value_t::array, tensor_where)) {
        if (!r.is_array() || r.size() != 3 || !r[0].is_number_unsigned() || !r[1].is_number_unsigned()) {
          corrupt(tensor_where + " has a malformed range");
        }
        ManifestRange range{r[0].get<std::uint64_t>(), r[1].get<std::uint64_t>(), hex_hash(r[2], tensor_where + "'s hash")};
        const std::uint64_t previous_end = tensor.ranges.empty() ? 0 : tensor.ranges.back().end;
        if (range.begin > range.end || range.end > file.bytes || range.begin < previous_end) {
          corrupt(tensor_where + " has a range outside the file or out of order");
        }
        tensor.ranges.push_back(range);
      }
      file.tensors.push_back(std::move(tensor));
    }
    m.files.push_back(std::move(file));
  }
  return m;
}

}  // namespace quicksave::format
