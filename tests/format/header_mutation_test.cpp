// Deterministic mutation testing of the header reader: thousands of corrupted variants of valid
// files must each be either rejected with a problem or accepted with every invariant intact.
// Never a crash, an exception or an out-of-bounds read (run under ASan by the sanitizer build).
#include <gtest/gtest.h>

#include <random>

#include "quicksave/safetensors.hpp"

namespace quicksave {
namespace {

std::string random_name(std::mt19937_64& rng) {
  static const char* pieces[] = {"model", "layers", "0", "17", "weight", "bias", "é", "权重", "\"q\"", "a\\b", "\n", " "};
  std::string name;
  const int parts = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < parts; ++i) name += std::string(i ? "." : "") + pieces[rng() % std::size(pieces)];
  return name + std::to_string(rng() % 1000);
}

std::string random_valid_file(std::mt19937_64& rng) {
  std::vector<TensorSpec> specs;
  const int count = static_cast<int>(rng() % 6);
  for (int i = 0; i < count; ++i) {
    TensorSpec spec{random_name(rng), static_cast<DType>(rng() % kDTypeCount), {}};
    const int rank = static_cast<int>(rng() % 4);
    for (int d = 0; d < rank; ++d) spec.shape.push_back(rng() % 4);
    if (dtype_bits(spec.dtype) < 8) spec.shape.push_back(8);  // whole bytes for F4/F6
    specs.push_back(std::move(spec));
  }
  std::optional<StringMap> metadata;
  if (rng() % 2) metadata = StringMap{{"format", "pt"}, {random_name(rng), random_name(rng)}};
  try {
    const auto layout = layout_file(specs, metadata);
    std::string data(layout.data_bytes, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    return layout.header + data;
  } catch (...) {
    return layout_file({}, std::nullopt).header;  // duplicate random names: fall back to empty
  }
}

void set_length(std::string& file, std::uint64_t n) {
  for (int i = 0; i < 8 && i < static_cast<int>(file.size()); ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
}

std::string mutate(std::string file, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 3);
  static const char* tokens[] = {"{", "}", "[", "]", ",", ":", "\"", "0", "-1", "1e400", "18446744073709551616",
                                 "null", "\"F32\"", "\"__metadata__\"", "\\u0000", "\xff", " "};
  for (int e = 0; e < edits && !file.empty(); ++e) {
    const std::size_t pos = rng() % file.size();
    switch (rng() % 8) {
      case 0: file[pos] = static_cast<char>(rng()); break;
      case 1: file[pos] ^= static_cast<char>(1 << (rng() % 8)); break;
      case 2: file.erase(pos, 1 + rng() % 4); break;
      case 3: file.insert(pos, tokens[rng() % std::size(tokens)]); break;
      case 4: file.resize(rng() % (file.size() + 16)); break;
      case 5: set_length(file, rng() % (file.size() + 16)); break;
      case 6: set_length(file, rng()); break;
      case 7:  // keep the length field consistent with an insertion inside the JSON
        if (file.size() > 9) {
          const std::size_t at = 8 + rng() % (file.size() - 8);
          file.insert(at, tokens[rng() % std::size(tokens)]);
          std::uint64_t n = 0;
          for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
          set_length(file, n + std::char_traits<char>::length(tokens[0]));
        }
        break;
    }
  }
  return file;
}

// Returns true when the file was accepted; checks the accepted header's invariants.
bool check_file(const std::string& file) {
  const auto bytes = std::as_bytes(std::span(file.data(), file.size()));
  auto length = check_header_length(bytes, file.size());
  if (std::holds_alternative<HeaderProblem>(length)) {
    EXPECT_FALSE(std::get<HeaderProblem>(length).message.empty());
    return false;
  }
  const auto n = std::get<std::uint64_t>(length);
  EXPECT_LE(8 + n, file.size());
  auto result = check_header(std::string_view(file).substr(8, n), file.size());
  if (auto* problem = std::get_if<HeaderProblem>(&result)) {
    EXPECT_FALSE(problem->message.empty());
    return false;
  }
  const Header& header = std::get<Header>(result);
  std::uint64_t offset = 0;
  for (const auto& t : header.tensors) {
    EXPECT_EQ(t.begin, offset);
    EXPECT_EQ(t.nbytes(), tensor_nbytes(t.dtype, t.shape));
    offset = t.end;
  }
  EXPECT_EQ(8 + n + offset, file.size());
  return true;
}

TEST(HeaderMutation, ValidFilesDecodeToWhatWasWritten) {
  std::mt19937_64 rng(20261129);
  for (int i = 0; i < 500; ++i) {
    const std::string file = random_valid_file(rng);
    EXPECT_TRUE(check_file(file)) << "valid file " << i << " rejected";
  }
}

TEST(HeaderMutation, ThousandsOfMutantsNeverCrashAndKeepInvariants) {
  std::mt19937_64 rng(42);
  int accepted = 0, rejected = 0;
  for (int i = 0; i < 800; ++i) {
    const std::string base = random_valid_file(rng);
    for (int m = 0; m < 12; ++m) (check_file(mutate(base, rng)) ? accepted : rejected)++;
  }
  EXPECT_EQ(accepted + rejected, 9600);
  EXPECT_GT(rejected, 5000);  // the mutations really do break files
  RecordProperty("accepted", accepted);
}

}  // namespace
}  // namespace quicksave
