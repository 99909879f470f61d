// Helpers every test folder shares: a scratch directory per test, whole-file reads and writes,
// deterministic byte patterns, and catching quicksave::Error.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "quicksave/error.hpp"

namespace quicksave::testing {

namespace fs = std::filesystem;

// A fresh directory under the temporary directory, removed with everything in it afterwards.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "quicksave-test") {
    std::random_device rd;
    path_ = fs::temp_directory_path() / (prefix + "-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::vector<std::byte> read_bytes(const fs::path& path) {
  const std::string text = read_file(path);
  std::vector<std::byte> bytes(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) bytes[i] = static_cast<std::byte>(text[i]);
  return bytes;
}

inline void write_file(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// Every file of `a` equals the same file of `b` byte for byte, and both hold the same names;
// returns the number of files compared.
// The Hugging Face files of two checkpoint folders are byte-identical. quicksave's checksum
// manifest is left out: its ranges follow the staging chunks (and distributed saves write none).
inline bool is_manifest(const fs::path& name) { return name.string().ends_with(".quicksave-manifest.json"); }

inline int expect_same_files(const fs::path& a, const fs::path& b) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(a)) {
    const auto name = e.path().filename();
    if (is_manifest(name)) continue;
    EXPECT_TRUE(fs::exists(b / name)) << name;
    EXPECT_TRUE(read_file(e.path()) == read_file(b / name)) << name << " differs";
    ++n;
  }
  for (const auto& e : fs::directory_iterator(b)) {
    if (is_manifest(e.path().filename())) continue;
    EXPECT_TRUE(fs::exists(a / e.path().filename())) << e.path().filename();
  }
  return n;
}

// Bytes that differ between seeds and positions, so a misplaced or missing write shows.
inline std::vector<std::byte> pattern(std::uint64_t seed, std::size_t n) {
  std::vector<std::byte> out(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    out[i] = static_cast<std::byte>((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
  return out;
}

// "" when equal, else where they first differ.
inline std::string first_difference(const std::vector<std::byte>& actual, const std::vector<std::byte>& expected) {
  if (actual.size() != expected.size()) {
    return "size " + std::to_string(actual.size()) + " != expected " + std::to_string(expected.size());
  }
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i]) return "first difference at byte " + std::to_string(i);
  }
  return "";
}

inline Error error_of(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a quicksave::Error: " << e.what();
  }
  return Error(ErrorCode::internal, "not a quicksave::Error");
}

// Runs `call`, which must throw a quicksave::Error, and returns it.
template <typename F>
Error thrown_by(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something else: " << e.what();
    return Error(ErrorCode::internal, "");
  }
  ADD_FAILURE() << "did not throw";
  return Error(ErrorCode::internal, "");
}

}  // namespace quicksave::testing
