// Byte-exact writer vectors from safetensors' own tests (spec §7.2) and one test per reader rule
// (spec §7.3).
#include <gtest/gtest.h>

#include <cstring>

#include "quicksave/error.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave {
namespace {

std::uint64_t length_prefix(const std::string& header) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(header[i]);
  return n;
}

std::string json_of(const FileLayout& layout) { return layout.header.substr(8); }

TEST(LayoutFile, SerializationVectorAttn0) {  // tensor.rs test_serialization
  std::vector<TensorSpec> specs{{"attn.0", DType::F32, {1, 2, 3}}};
  const auto layout = layout_file(specs, std::nullopt);
  EXPECT_EQ(length_prefix(layout.header), 64u);
  const std::string body = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(json_of(layout), body + std::string(64 - body.size(), ' '));
  EXPECT_EQ(layout.data_bytes, 24u);
  EXPECT_EQ(layout.file_bytes(), 8u + 64u + 24u);
}

TEST(LayoutFile, ForcedAlignmentPadsWithSpaces) {  // tensor.rs test_serialization_forced_alignement
  std::vector<TensorSpec> specs{{"attn0", DType::F32, {1, 1, 2, 3}}};
  const auto layout = layout_file(specs, std::nullopt);
  EXPECT_EQ(length_prefix(layout.header), 72u);
  EXPECT_EQ(json_of(layout).substr(json_of(layout).size() - 7), std::string(7, ' '));
  EXPECT_NE(json_of(layout)[json_of(layout).size() - 8], ' ');
}

TEST(LayoutFile, EmptyFileAndMetadataOnly) {  // tensor.rs test_empty
  const auto empty = layout_file({}, std::nullopt);
  EXPECT_EQ(empty.header, std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  const auto meta = layout_file({}, StringMap{{"framework", "pt"}});
  EXPECT_EQ(length_prefix(meta.header), 40u);
  EXPECT_EQ(json_of(meta), std::string(R"({"__metadata__":{"framework":"pt"}})") + "     ");
}

TEST(LayoutFile, PythonVectorsInt32AndMixedDtypes) {  // bindings/python/tests/test_simple.py
  std::vector<TensorSpec> i32{{"test", DType::I32, {2, 2}}};
  EXPECT_EQ(length_prefix(layout_file(i32, std::nullopt).header), 64u);
  std::vector<TensorSpec> mixed{{"test", DType::I32, {2, 2}}, {"test2", DType::F16, {2, 2}}};
  const auto layout = layout_file(mixed, std::nullopt);
  EXPECT_EQ(length_prefix(layout.header), 128u);
  EXPECT_EQ(layout.tensors[0].name, "test");  // I32 sorts before F16 (descending dtype)
  EXPECT_EQ(layout.tensors[1].begin, 16u);
  EXPECT_EQ(length_prefix(layout_file(i32, StringMap{{"framework", "pt"}}).header), 96u);
}

TEST(LayoutFile, HubMixinLinearIs128Bytes) {  // huggingface_hub test_hub_mixin_pytorch.py L149
  std::vector<TensorSpec> specs{{"l1.weight", DType::F32, {2, 2}}, {"l1.bias", DType::F32, {2}}};
  const auto layout = layout_file(specs, std::nullopt);
  EXPECT_EQ(length_prefix(layout.header), 128u);
  EXPECT_EQ(json_of(layout).find_last_not_of(' ') + 1, 124u);
  EXPECT_EQ(layout.tensors[0].name, "l1.bias");
}

TEST(LayoutFile, OrderIsDtypeDescendingThenNameBytewise) {
  std::vector<TensorSpec> specs{{"b", DType::BOOL, {1}},  {"z", DType::U8, {1}},   {"a", DType::U8, {1}},
                                {"Z", DType::U8, {1}},    {"x", DType::U64, {1}},  {"c", DType::C64, {1}},
                                {"é", DType::U8, {1}}};
  const auto layout = layout_file(specs, std::nullopt);
  std::vector<std::string> order;
  for (const auto& t : layout.tensors) order.push_back(t.name);
  EXPECT_EQ(order, (std::vector<std::string>{"x", "c", "Z", "a", "z", "é", "b"}));
  std::uint64_t offset = 0;
  for (const auto& t : layout.tensors) {
    EXPECT_EQ(t.begin, offset);
    offset = t.end;
  }
}

TEST(LayoutFile, MetadataIsSortedAndEscapedLikeSerde) {
  const auto layout = layout_file({}, StringMap{{"b", "x\"y\\z\n\x01/é"}, {"a", "1"}});
  EXPECT_EQ(json_of(layout).substr(0, json_of(layout).find_last_not_of(' ') + 1),
            "{\"__metadata__\":{\"a\":\"1\",\"b\":\"x\\\"y\\\\z\\n\\u0001/é\"}}");
}

TEST(LayoutFile, F4NeedsWholeBytesAndRejectsBadInput) {
  std::vector<TensorSpec> ok{{"w", DType::F4, {3, 2}}};
  EXPECT_EQ(layout_file(ok, std::nullopt).data_bytes, 3u);
  std::vector<TensorSpec> odd{{"w", DType::F4, {3}}};
  EXPECT_THROW(layout_file(odd, std::nullopt), Error);
  std::vector<TensorSpec> dup{{"w", DType::F32, {1}}, {"w", DType::F16, {1}}};
  EXPECT_THROW(layout_file(dup, std::nullopt), Error);
  std::vector<TensorSpec> reserved{{"__metadata__", DType::F32, {1}}};
  EXPECT_THROW(layout_file(reserved, std::nullopt), Error);
  std::vector<TensorSpec> overflow{{"w", DType::F32, {1ull << 40, 1ull << 40}}};
  EXPECT_THROW(layout_file(overflow, std::nullopt), Error);
}

TEST(LayoutFile, ZeroRankAndEmptyTensors) {
  std::vector<TensorSpec> specs{{"s", DType::F32, {}}, {"e", DType::F32, {0, 3}}};
  const auto layout = layout_file(specs, std::nullopt);
  EXPECT_EQ(layout.tensors[0].name, "e");
  EXPECT_EQ(layout.tensors[0].nbytes(), 0u);
  EXPECT_EQ(layout.tensors[1].nbytes(), 4u);
}

// --- reader ----------------------------------------------------------------------------------

std::string file_with_header(const std::string& json, std::size_t data_bytes, std::uint64_t n_override = 0) {
  std::string file(8, '\0');
  const std::uint64_t n = n_override ? n_override : json.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return file + json + std::string(data_bytes, '\0');
}

std::variant<Header, HeaderProblem> check(const std::string& file) {
  const auto bytes = std::as_bytes(std::span(file.data(), file.size()));
  auto length = check_header_length(bytes, file.size());
  if (auto* p = std::get_if<HeaderProblem>(&length)) return *p;
  return check_header(std::string_view(file).substr(8, std::get<std::uint64_t>(length)), file.size());
}

HeaderRule rule_of(const std::string& file) {
  auto result = check(file);
  if (auto* p = std::get_if<HeaderProblem>(&result)) return p->rule;
  ADD_FAILURE() << "expected a problem";
  return HeaderRule::invalid_json;
}

TEST(DecodeHeader, RoundTripsTheWriter) {
  std::vector<TensorSpec> specs{{"a", DType::BF16, {2, 3}}, {"b", DType::I64, {}}, {"c", DType::BOOL, {0}}};
  const auto layout = layout_file(specs, StringMap{{"format", "pt"}});
  const std::string file = layout.header + std::string(layout.data_bytes, '\x7f');
  const auto header = decode_header(std::as_bytes(std::span(file.data(), file.size())), file.size());
  EXPECT_EQ(header.tensors, layout.tensors);
  ASSERT_TRUE(header.metadata.has_value());
  EXPECT_EQ(*header.metadata, (StringMap{{"format", "pt"}}));
  EXPECT_EQ(header.data_start(), layout.header.size());
}

TEST(DecodeHeader, EachRuleHasItsOwnError) {
  EXPECT_EQ(rule_of(std::string("\x01\x00", 2)), HeaderRule::header_too_small);
  EXPECT_EQ(rule_of(file_with_header("{}", 0, 100'000'001)), HeaderRule::header_too_large);
  EXPECT_EQ(rule_of(file_with_header("{}", 0, 50)), HeaderRule::invalid_header_length);
  EXPECT_EQ(rule_of(file_with_header("{\"\xff\":1}", 0)), HeaderRule::invalid_utf8);
  EXPECT_EQ(rule_of(file_with_header("{\"a\":", 0)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header("[]", 0)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}})", 4)), HeaderRule::invalid_json);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
            HeaderRule::duplicate_name);
  EXPECT_EQ(rule_of(file_with_header(R"({"__metadata__":{"k":1}})", 0)), HeaderRule::invalid_metadata);
  EXPECT_EQ(rule_of(file_with_header(R"({"__metadata__":{"k":{"x":"y"}}})", 0)), HeaderRule::invalid_metadata);
  EXPECT_EQ(rule_of(file_with_header(R"({"__metadata__":[]})", 0)), HeaderRule::invalid_metadata);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16)), HeaderRule::unknown_dtype);
  // test_json_attack: offsets that do not start at 0 / overlap / go backwards
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)), HeaderRule::invalid_offset);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
            HeaderRule::invalid_offset);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4)), HeaderRule::invalid_offset);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4)),
            HeaderRule::validation_overflow);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4)),
            HeaderRule::validation_overflow);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2)), HeaderRule::misaligned_slice);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)), HeaderRule::tensor_invalid_info);
  // test_metadata_incomplete_buffer: trailing garbage, and truncated data
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 5)),
            HeaderRule::metadata_incomplete_buffer);
  EXPECT_EQ(rule_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 3)),
            HeaderRule::metadata_incomplete_buffer);
}

TEST(DecodeHeader, AcceptsWhatTheReferenceAccepts) {
  // whitespace around the object, unknown fields, null metadata, zero-sized and 0-rank tensors
  const std::string json =
      " \n{\"__metadata__\":null,\"e\":{\"extra\":[1,{\"x\":2}],\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]},"
      "\"s\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1]}}\t ";
  auto result = check(file_with_header(json, 1));
  ASSERT_TRUE(std::holds_alternative<Header>(result)) << std::get<HeaderProblem>(result).message;
  const auto& header = std::get<Header>(result);
  EXPECT_FALSE(header.metadata.has_value());
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[0].name, "e");
  EXPECT_EQ(header.tensors[1].shape.size(), 0u);
}

TEST(DecodeHeader, ByteOrderMarkIsRejectedAsSerdeDoes) {
  // nlohmann would skip it; the reference (serde_json) fails with "expected value".
  const std::string json = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_TRUE(std::holds_alternative<Header>(check(file_with_header(json, 4))));
  const std::string with_bom = file_with_header("\xEF\xBB\xBF" + json, 4);
  EXPECT_EQ(rule_of(with_bom), HeaderRule::invalid_json);
  EXPECT_NE(std::get<HeaderProblem>(check(with_bom)).message.find("byte order mark"), std::string::npos);
}

TEST(DecodeHeader, DimensionAboveInt64MaxIsRejected) {
  // A zero dimension makes the byte count 0, so only this rule stops 2^63 (LibTorch cannot load it).
  for (const std::string dim : {"9223372036854775808", "18446744073709551615"}) {
    const std::string file = file_with_header(R"({"a":{"dtype":"F32","shape":[)" + dim + R"(,0],"data_offsets":[0,0]}})", 0);
    EXPECT_EQ(rule_of(file), HeaderRule::invalid_json) << dim;
    EXPECT_NE(std::get<HeaderProblem>(check(file)).message.find("larger than 2^63-1"), std::string::npos) << dim;
  }
  const std::string max = file_with_header(R"({"a":{"dtype":"F32","shape":[9223372036854775807,0],"data_offsets":[0,0]}})", 0);
  EXPECT_TRUE(std::holds_alternative<Header>(check(max)));
}

TEST(DecodeHeader, ErrorsNameTheTensor) {
  const std::string file = file_with_header(R"({"weird name":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4);
  try {
    decode_header(std::as_bytes(std::span(file.data(), file.size())), file.size());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt);
    EXPECT_NE(std::string(e.what()).find("`weird name`"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quicksave
