#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "format/text.hpp"
#include "golden.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"

namespace quicksave {
namespace {

TEST(IndexJson, MatchesPythonJsonDumpForTheUpstreamExample) {
  ShardIndex index;
  index.metadata.set("total_size", std::int64_t{40});
  for (int i = 1; i <= 5; ++i) {
    index.weight_map.emplace_back("layer_" + std::to_string(i),
                                  i <= 3 ? "pytorch_model-00001-of-00002.bin" : "pytorch_model-00002-of-00002.bin");
  }
  const std::string expected =
      "{\n  \"metadata\": {\n    \"total_size\": 40\n  },\n  \"weight_map\": {\n"
      "    \"layer_1\": \"pytorch_model-00001-of-00002.bin\",\n    \"layer_2\": \"pytorch_model-00001-of-00002.bin\",\n"
      "    \"layer_3\": \"pytorch_model-00001-of-00002.bin\",\n    \"layer_4\": \"pytorch_model-00002-of-00002.bin\",\n"
      "    \"layer_5\": \"pytorch_model-00002-of-00002.bin\"\n  }\n}";
  EXPECT_EQ(index_to_json(index), expected);
}

TEST(IndexJson, EveryGoldenIndexRoundTripsByteForByte) {
  const auto golden = testing::load_golden("save_cases.json");
  int checked = 0;
  for (const auto& c : golden["save_cases"]) {
    for (const auto& f : c["files_after"]) {
      if (f["kind"] != "json") continue;
      const std::string text = f["text"];
      const ShardIndex index = parse_index_json(text);
      EXPECT_EQ(index_to_json(index), text) << c["id"];
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6);  // the six index files the reference wrote
}

TEST(IndexJson, AsciiEscapesAndValueTypes) {
  ShardIndex index;
  index.metadata.set("total_size", std::int64_t{32});
  index.metadata.set("note", std::string("na\xc3\xafve/\xc3\xbc"));
  index.metadata.set("f", 0.5);
  index.metadata.set("g", 1e16);
  index.metadata.set("b", true);
  index.metadata.set("z", nullptr);
  index.weight_map.emplace_back("emoji_\xf0\x9f\x99\x82", "a.bin");
  index.weight_map.emplace_back("quote\"back\\slash\x7f", "a.bin");
  const std::string text = index_to_json(index);
  EXPECT_NE(text.find("\"note\": \"na\\u00efve/\\u00fc\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"f\": 0.5,"), std::string::npos);
  EXPECT_NE(text.find("\"g\": 1e+16,"), std::string::npos);
  EXPECT_NE(text.find("\"b\": true,"), std::string::npos);
  EXPECT_NE(text.find("\"z\": null\n"), std::string::npos);
  EXPECT_NE(text.find("\"emoji_\\ud83d\\ude42\""), std::string::npos);
  EXPECT_NE(text.find("\"quote\\\"back\\\\slash\\u007f\""), std::string::npos);
  EXPECT_EQ(text.back(), '}');
  const ShardIndex back = parse_index_json(text);
  EXPECT_EQ(back.metadata, index.metadata);
  EXPECT_EQ(back.weight_map, index.weight_map);
}

// The reader parse_index_json replaced (nlohmann::ordered_json, quadratic in the entries), kept
// here as the oracle: the linear reader must accept and reject the same texts with the same
// messages and the same result.
ShardIndex ordered_json_parse(std::string_view text) {
  using ordered_json = nlohmann::ordered_json;
  const auto corrupt_index = [](const std::string& why) { return Error(ErrorCode::corrupt, "invalid index JSON: " + why); };
  const auto to_meta_value = [&](const std::string& key, const ordered_json& v) -> MetaValue {
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
  };
  if (!format::is_valid_utf8(text)) throw corrupt_index("not UTF-8");
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  ordered_json::parser_callback_t reject_duplicates = [&](int, ordered_json::parse_event_t event, ordered_json& parsed) {
    switch (event) {
      case ordered_json::parse_event_t::object_start: keys_per_object.emplace_back(); break;
      case ordered_json::parse_event_t::object_end: keys_per_object.pop_back(); break;
      case ordered_json::parse_event_t::key:
        if (!keys_per_object.back().insert(parsed.get<std::string>()).second && duplicate.empty()) duplicate = parsed.get<std::string>();
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

// "ok:<json written back>" or "error:<message>".
std::string outcome(const std::function<ShardIndex(std::string_view)>& parse, std::string_view text) {
  try {
    return "ok:" + index_to_json(parse(text));
  } catch (const Error& e) {
    return std::string("error:") + to_string(e.code()) + ":" + e.what();
  }
}

TEST(IndexJson, LinearReaderDecidesLikeTheOrderedJsonReader) {
  const std::vector<std::string> texts = {
      "", " ", "{", "}", "[]", "null", "3", "\"x\"", "{}", "{\"weight_map\":{}}", " {\"weight_map\":{}} ",
      "{\"weight_map\":{}} x", "{\"weight_map\":{}}{}", "{\"metadata\":{}}", "{\"weight_map\":[]}", "{\"weight_map\":null}",
      "{\"weight_map\":\"m\"}", "{\"weight_map\":{\"a\":1}}", "{\"weight_map\":{\"a\":\"x\",\"b\":[\"y\"]}}",
      "{\"weight_map\":{\"a\":{\"b\":\"c\"}}}", "{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}", "{\"weight_map\":{},\"weight_map\":{}}",
      "{\"metadata\":{\"x\":[1]},\"weight_map\":{}}", "{\"metadata\":{\"x\":{}},\"weight_map\":{}}", "{\"metadata\":3,\"weight_map\":{}}",
      "{\"metadata\":[],\"weight_map\":{}}", "{\"metadata\":null,\"weight_map\":{\"a\":\"b\"}}", "{\"metadata\":\"s\",\"weight_map\":{}}",
      "{\"metadata\":{\"a\":1,\"b\":-2,\"c\":1.5,\"d\":true,\"e\":null,\"f\":\"s\",\"g\":18446744073709551615,\"h\":1e300},"
      "\"weight_map\":{\"z\":\"1.safetensors\",\"a\":\"2.safetensors\",\"m\":\"1.safetensors\"}}",
      "{\"metadata\":{\"total_size\":5,\"x\":1},\"metadata\":{}, \"weight_map\":{}}",
      "{\"weight_map\":{\"a\":1},\"metadata\":3}", "{\"metadata\":3,\"weight_map\":{\"a\":1}}",
      "{\"metadata\":{\"x\":[1]},\"weight_map\":{\"a\":1}}", "{\"metadata\":{\"x\":[1],\"y\":{}},\"weight_map\":{}}",
      "{\"other\":{\"a\":1,\"a\":2},\"weight_map\":{}}", "{\"other\":[{\"weight_map\":3}],\"weight_map\":{\"k\":\"v\"}}",
      "{\"other\":{\"weight_map\":{\"a\":1}},\"weight_map\":{}}", "{\"weight_map\":{\"a\":\"b\"},\"x\":[[[[[]]]]]}",
      "{\"weight_map\":{\"\\u0000\":\"a\\u00e9\"}}", "{\"weight_map\":{\"\\ud800\":\"x\"}}", "{\"weight_map\":{\"a\":\"x\"},}",
      "{\"weight_map\":{\"a\":\"x\"}", "{\"metadata\":{\"n\":1e999},\"weight_map\":{}}", "{\"metadata\":{\"n\":-0},\"weight_map\":{}}",
      "{\"metadata\":{\"n\":-9223372036854775809},\"weight_map\":{}}", "{\"weight_map\":{\"a\":\"x\"}}\n", "/* c */{\"weight_map\":{}}",
      "{\"weight_map\":{\"\xff\":\"x\"}}",
  };
  for (const auto& text : texts) EXPECT_EQ(outcome(parse_index_json, text), outcome(ordered_json_parse, text)) << text;
  // Deep nesting outside the schema, and every golden index.
  const std::string deep = "{\"x\":" + std::string(10'000, '[') + std::string(10'000, ']') + ",\"weight_map\":{}}";
  EXPECT_EQ(outcome(parse_index_json, deep), outcome(ordered_json_parse, deep));
  for (const auto& c : testing::load_golden("save_cases.json")["save_cases"]) {
    for (const auto& f : c["files_after"]) {
      if (f["kind"] == "json") EXPECT_EQ(outcome(parse_index_json, f["text"].get<std::string>()), outcome(ordered_json_parse, f["text"].get<std::string>()));
    }
  }
}

TEST(IndexJson, ByteOrderMarkIsRejectedAsPythonJsonDoes) {
  try {
    parse_index_json("\xEF\xBB\xBF{\"weight_map\":{}}");
    ADD_FAILURE() << "accepted a BOM";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt);
    EXPECT_NE(std::string(e.what()).find("byte order mark"), std::string::npos) << e.what();
  }
}

TEST(IndexJson, ManyEntriesKeepTheirOrderAndWriteBackIdentically) {
  ShardIndex index;
  index.metadata.set("total_size", std::int64_t{1});
  // Distinct names in a scrambled order (7919 is invertible modulo the prime 300,007).
  for (std::int64_t i = 300'000; i > 0; --i) {
    index.weight_map.emplace_back("t" + std::to_string(i * 7919 % 300'007), "m-" + std::to_string(i % 5) + ".safetensors");
  }
  const std::string text = index_to_json(index);
  const ShardIndex back = parse_index_json(text);
  EXPECT_EQ(back.weight_map, index.weight_map);
  EXPECT_EQ(index_to_json(back), text);
}

TEST(IndexJson, EmptyObjectsAreWrittenInline) {
  EXPECT_EQ(index_to_json(ShardIndex{}), "{\n  \"metadata\": {},\n  \"weight_map\": {}\n}");
}

TEST(IndexJson, StrictReaderRejectsMalformedIndexes) {
  const char* bad[] = {
      "",                                                        // not JSON
      "[]",                                                      // not an object
      "{\"metadata\":{}}",                                       // no weight_map
      "{\"weight_map\":[]}",                                     // weight_map not an object
      "{\"weight_map\":{\"a\":1}}",                              // non-string file
      "{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}",              // duplicate tensor
      "{\"weight_map\":{},\"weight_map\":{}}",                   // duplicate top-level key
      "{\"metadata\":{\"x\":[1]},\"weight_map\":{}}",            // nested metadata
      "{\"metadata\":3,\"weight_map\":{}}",                      // metadata not an object
      "{\"weight_map\":{\"\xff\":\"x\"}}",                       // invalid UTF-8
  };
  for (const char* text : bad) {
    try {
      parse_index_json(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::corrupt) << text;
    }
  }
  EXPECT_NO_THROW(parse_index_json("{\"weight_map\":{}}"));
}

}  // namespace
}  // namespace quicksave
