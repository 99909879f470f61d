#include <gtest/gtest.h>

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
