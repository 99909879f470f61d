// The torch.save archive readers without LibTorch: the zip directory and the pickle machine, on
// what torch.save writes and on hostile programs (issue #13: nesting, floods, declared sizes,
// wrong types, code).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "format/torch_pickle.hpp"
#include "format/zip_directory.hpp"
#include "quicksave/error.hpp"

namespace quicksave::format {
namespace {

// Protocol-2 opcodes, as torch.save writes them.
struct P {
  std::string b = "\x80\x02";
  P& op(std::string_view raw) {
    b += raw;
    return *this;
  }
  P& glob(const std::string& module, const std::string& name) { return op("c" + module + "\n" + name + "\n"); }
  P& str(const std::string& s) {
    const auto n = static_cast<std::uint32_t>(s.size());
    b += 'X';
    b.append(reinterpret_cast<const char*>(&n), 4);
    return op(s);
  }
  P& i(std::int32_t v) {
    b += 'J';
    b.append(reinterpret_cast<const char*>(&v), 4);
    return *this;
  }
  P& ints(std::initializer_list<std::int32_t> vs) {
    op("(");
    for (auto v : vs) i(v);
    return op("t");
  }
  P& tensor(const std::string& key, std::int32_t numel, std::int32_t offset, std::initializer_list<std::int32_t> sizes,
            std::initializer_list<std::int32_t> strides, const std::string& type = "FloatStorage") {
    glob("torch._utils", "_rebuild_tensor_v2").op("(");
    op("(").str("storage").glob("torch", type).str(key).str("cpu").i(numel).op("tQ");
    i(offset).ints(sizes).ints(strides).op("\x89");
    glob("collections", "OrderedDict").op(")R");
    return op("tR");
  }
  std::string done() const { return b + "."; }
};

std::string error_of(std::string_view program, const PickleLimits& limits = {}) {
  try {
    parse_torch_pickle(program, limits);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt) << e.what();
    return e.what();
  }
  return "accepted";
}

TEST(TorchPickle, ReadsAnOrderedDictWithSharedStoragesAndViews) {
  P p;
  p.glob("collections", "OrderedDict").op(")R(");
  p.str("w").tensor("0", 6, 0, {2, 3}, {3, 1});
  p.str("view").tensor("0", 6, 3, {3}, {1});
  p.str("b").tensor("1", 2, 0, {2}, {1}, "HalfStorage");
  const auto dict = parse_torch_pickle(p.op("u").done());
  ASSERT_EQ(dict.entries.size(), 3u);
  ASSERT_EQ(dict.storages.size(), 2u);  // "0" is shared
  EXPECT_EQ(dict.entries[0].first, "w");
  EXPECT_EQ(dict.entries[1].second.storage, dict.entries[0].second.storage);
  EXPECT_EQ(dict.entries[1].second.offset, 3);
  EXPECT_EQ(dict.storages[1].type, "HalfStorage");
  EXPECT_EQ(dict.storages[1].nbytes(), 4u);
  EXPECT_EQ(dict.entries[0].second.strides, (std::vector<std::int64_t>{3, 1}));
}

TEST(TorchPickle, DeepNestingIsRefusedAndFreedWithoutRecursion) {
  // 300,000 nested tuples overflowed the stack of the old reader's recursive destructor.
  const std::string tuple1 = "\x80\x02)" + std::string(300'000, '\x85') + ".";
  EXPECT_NE(error_of(tuple1).find("levels of nesting"), std::string::npos) << error_of(tuple1);
  // With the depth bound lifted, the nest is built and freed without recursion.
  PickleLimits unbounded;
  unbounded.max_depth = SIZE_MAX;
  EXPECT_NE(error_of(tuple1, unbounded).find("not a dict"), std::string::npos);
  const std::string lists = "\x80\x02" + std::string(300'000, ']') + std::string(299'999, 'a') + ".";
  EXPECT_NE(error_of(lists, unbounded).find("not a dict"), std::string::npos);
}

TEST(TorchPickle, FloodsHitTheirBoundsWithAMessage) {
  EXPECT_NE(error_of("\x80\x02" + std::string(10'000'000, '(') + ".").find("open MARKs"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02" + std::string(2'000'000, 'N') + ".").find("values on the stack"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02Nr\xff\xff\xff\xff.").find("memo slots"), std::string::npos);
  PickleLimits small;
  small.max_values = 1000;
  std::string many = "\x80\x02]";
  for (int k = 0; k < 2000; ++k) many += std::string("U\x00" "a", 3);
  EXPECT_NE(error_of(many + ".", small).find("values"), std::string::npos);
  std::string globals = "\x80\x02";
  for (int k = 0; k < 70'000; ++k) globals += "ca\nb\n";
  EXPECT_NE(error_of(globals + ".").find("GLOBAL"), std::string::npos);
}

TEST(TorchPickle, WrongTypesAreNamed) {
  P key_int;
  key_int.op("}").str("w").glob("torch._utils", "_rebuild_tensor_v2").op("((").str("storage").glob("torch", "FloatStorage").i(0);
  key_int.str("cpu").i(1).op("tQ").i(0).ints({1}).ints({1}).op("\x89)tRs");
  EXPECT_NE(error_of(key_int.done()).find("the storage key of BINPERSID at byte"), std::string::npos) << error_of(key_int.done());
  EXPECT_NE(error_of(key_int.done()).find("expects a str, found an int"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02]NNs.").find("SETITEM at byte 5 expects a dict, found a list"), std::string::npos) << error_of("\x80\x02]NNs.");
  EXPECT_NE(error_of("\x80\x02N)R.").find("REDUCE"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02NQ.").find("BINPERSID"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02s.").find("empty stack"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02}(s.").find("empty stack"), std::string::npos);  // never below the MARK
  EXPECT_NE(error_of("\x80\x02}").find("without STOP"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02\xff.").find("opcode 0xff"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02X\xff\xff\xff\x7f" "abc").find("declares"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02}K\x01Ns.").find("as a key"), std::string::npos);
  const std::string none_value("\x80\x02}X\x01\x00\x00\x00" "aNs.", 13);  // holds NULs: a std::string, not a C string
  EXPECT_NE(error_of(none_value).find("to None, not a tensor"), std::string::npos) << error_of(none_value);
}

TEST(TorchPickle, TensorsMustLieInsideTheirStorages) {
  P past;
  past.op("}").str("w").tensor("0", 4, 2, {2, 2}, {2, 1}).op("s");
  EXPECT_NE(error_of(past.done()).find("reaches element 5 but the storage has 4"), std::string::npos) << error_of(past.done());
  P negative;
  negative.op("}").str("w").tensor("0", 4, 0, {-1}, {1}).op("s");
  EXPECT_NE(error_of(negative.done()).find("negative"), std::string::npos);
  P mismatch;
  mismatch.op("}").str("w").tensor("0", 4, 0, {2, 2}, {1}).op("s");
  EXPECT_NE(error_of(mismatch.done()).find("2 sizes but 1 strides"), std::string::npos);
  P twice;
  twice.op("}(").str("w").tensor("0", 1, 0, {1}, {1}).str("v").tensor("0", 2, 0, {1}, {1}).op("u");
  EXPECT_NE(error_of(twice.done()).find("declared as 1 FloatStorage and as 2 FloatStorage"), std::string::npos) << error_of(twice.done());
  P empty;  // an empty tensor needs no element
  empty.op("}").str("w").tensor("0", 0, 0, {0, 3}, {3, 1}).op("s");
  EXPECT_EQ(error_of(empty.done()), "accepted");
}

TEST(TorchPickle, CodeIsRefusedByName) {
  P system;
  system.glob("posix", "system").op("(").str("touch /tmp/x").op("tR");
  EXPECT_NE(error_of(system.done()).find("refusing to call posix.system"), std::string::npos);
  P storage;
  storage.op("}").str("w").tensor("0", 1, 0, {1}, {1}, "os.system").op("s");
  EXPECT_NE(error_of(storage.done()).find("unsupported storage type"), std::string::npos);
}

// A zip of stored entries, as torch.save writes (no zip64, no extra fields).
std::string zip(const std::vector<std::pair<std::string, std::string>>& entries, int method = 0) {
  auto le = [](std::string& out, std::uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out += static_cast<char>((v >> (8 * k)) & 0xff);
  };
  std::string out, cd;
  for (const auto& [name, data] : entries) {
    const std::uint64_t local = out.size();
    le(out, 0x04034b50, 4), le(out, 20, 2), le(out, 0, 2), le(out, method, 2), le(out, 0, 4), le(out, 0, 4);
    le(out, data.size(), 4), le(out, data.size(), 4), le(out, name.size(), 2), le(out, 0, 2);
    out += name + data;
    le(cd, 0x02014b50, 4), le(cd, 20, 2), le(cd, 20, 2), le(cd, 0, 2), le(cd, method, 2), le(cd, 0, 4), le(cd, 0, 4);
    le(cd, data.size(), 4), le(cd, data.size(), 4), le(cd, name.size(), 2), le(cd, 0, 2), le(cd, 0, 2), le(cd, 0, 2);
    le(cd, 0, 2), le(cd, 0, 4), le(cd, local, 4);
    cd += name;
  }
  const std::uint64_t cd_offset = out.size();
  out += cd;
  le(out, 0x06054b50, 4), le(out, 0, 2), le(out, 0, 2), le(out, entries.size(), 2), le(out, entries.size(), 2);
  le(out, cd.size(), 4), le(out, cd_offset, 4), le(out, 0, 2);
  return out;
}

ZipDirectory read(const std::string& bytes) {
  return read_zip_directory(bytes.size(), [&](std::uint64_t offset, std::size_t n) { return bytes.substr(offset, n); });
}

std::string zip_error(const std::string& bytes) {
  try {
    read(bytes);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::corrupt);
    return e.what();
  }
  return "accepted";
}

TEST(ZipDirectory, FindsEntriesUnderTheArchivePrefix) {
  const auto dir = read(zip({{"archive/data.pkl", "PKL"}, {"archive/data/0", std::string(16, 'x')}}));
  EXPECT_EQ(dir.prefix, "archive/");
  ASSERT_NE(dir.find("data/0"), nullptr);
  EXPECT_EQ(dir.find("data/0")->size, 16u);
  EXPECT_EQ(dir.find("data.pkl")->data_offset, 30u + 16u);
  EXPECT_EQ(dir.find("data/1"), nullptr);
}

TEST(ZipDirectory, DeclaredSizesAreCheckedAgainstTheFile) {
  std::string bytes = zip({{"a/data/0", std::string(100, 'x')}});
  // The central directory says 3 GB (compressed and uncompressed) for 100 bytes.
  const auto at = bytes.find("PK\x01\x02");
  const std::uint32_t big = 3'000'000'000u;
  std::memcpy(&bytes[at + 20], &big, 4);
  std::memcpy(&bytes[at + 24], &big, 4);
  EXPECT_NE(zip_error(bytes).find("declares 3000000000 bytes"), std::string::npos) << zip_error(bytes);
  EXPECT_NE(zip_error(zip({{"a/data/0", "xx"}}, 8)).find("compressed (method 8)"), std::string::npos);
  EXPECT_NE(zip_error("PK\x05\x06").find("fewer than"), std::string::npos);
  EXPECT_NE(zip_error(std::string(100, '\0')).find("no end-of-central-directory"), std::string::npos);
  std::string lies = zip({{"a/x", "1"}});
  lies[lies.size() - 22 + 10] = '\xfe';  // 65,534 entries in a directory of one
  EXPECT_NE(zip_error(lies).find("cannot fit"), std::string::npos) << zip_error(lies);
  EXPECT_NE(zip_error(zip({{"a/x", "1"}, {"a/x", "2"}})).find("appears twice"), std::string::npos);
}

}  // namespace
}  // namespace quicksave::format
