// Tests of FaultBackend and commit::FaultFileSystem (one FaultPlan drives both seams): every
// FaultKind on every operation it applies to yields the error code,
// errno and message of a real failure (marked "injected"), `nth` selects exactly one call, short
// writes still produce the full file, and latency only delays. Run over both inner backends;
// io_uring is skipped, with the reason, where the ring cannot be created.
#include "io/fault_backend.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "commit/fault_file_system.hpp"
#include "quicksave/error.hpp"
#include "test_support.hpp"

namespace quicksave::io {
namespace {

using namespace std::chrono_literals;
using testing::read_file;
using testing::TempDir;
using testing::write_file;
using testing::error_of;
using testing::first_difference;
using testing::pattern;
using testing::read_bytes;
using testing::thrown_by;

// Moves the error out of the completion thread: a copy left behind there would drop the last
// reference on that thread, a free ThreadSanitizer cannot order (libstdc++'s count is not
// instrumented).
std::exception_ptr write_and_wait(IoBackend& backend, FileHandle file, std::uint64_t offset,
                                  const std::byte* buffer, std::size_t length) {
  std::promise<std::exception_ptr> result;
  auto future = result.get_future();
  backend.write(file, offset, buffer, length, [&result](std::exception_ptr e) { result.set_value(std::move(e)); });
  return future.get();
}

// Forwards everything to a real backend and records the writes it was asked for, to see what a
// FaultBackend above it really submitted.
class RecordingBackend : public IoBackend {
 public:
  explicit RecordingBackend(std::unique_ptr<IoBackend> inner) : inner_(std::move(inner)) {}
  std::set<std::pair<std::uint64_t, std::size_t>> writes() const {
    std::lock_guard lock(mutex_);
    return writes_;
  }

  std::string name() const override { return inner_->name(); }
  std::size_t direct_alignment() const override { return inner_->direct_alignment(); }
  void register_buffers(std::span<const std::span<std::byte>> regions) override { inner_->register_buffers(regions); }
  FileHandle create(const fs::path& path, const OpenOptions& options) override { return inner_->create(path, options); }
  void write(FileHandle file, std::uint64_t offset, const std::byte* buffer, std::size_t length,
             Completion done) override {
    {
      std::lock_guard lock(mutex_);
      writes_.emplace(offset, length);
    }
    inner_->write(file, offset, buffer, length, std::move(done));
  }
  FileHandle open_read(const fs::path& path, bool direct) override { return inner_->open_read(path, direct); }
  void read(FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length, Completion done) override {
    inner_->read(file, offset, buffer, length, std::move(done));
  }
  void drain() override { inner_->drain(); }
  void sync(FileHandle file) override { inner_->sync(file); }
  void truncate(FileHandle file, std::uint64_t size) override { inner_->truncate(file, size); }
  void close(FileHandle file) override { inner_->close(file); }
  BackendStats stats() const override { return inner_->stats(); }

 private:
  std::unique_ptr<IoBackend> inner_;
  mutable std::mutex mutex_;
  std::set<std::pair<std::uint64_t, std::size_t>> writes_;
};

enum class Kind { posix, io_uring };

std::string kind_name(const ::testing::TestParamInfo<Kind>& info) {
  return info.param == Kind::posix ? "posix" : "io_uring";
}

class FaultTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::io_uring) {
      try {
        make_uring_backend(4);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::unavailable) throw;
        GTEST_SKIP() << "io_uring unavailable here: " << e.what();
      }
    }
  }

  std::unique_ptr<IoBackend> inner() const {
    return GetParam() == Kind::posix ? make_posix_backend(3) : make_uring_backend(4);
  }
  std::string write_call() const { return GetParam() == Kind::posix ? "pwrite" : "io_uring write"; }

  TempDir dir_;
};

std::string strerror_text(FaultKind kind) {
  return kind == FaultKind::enospc ? "No space left on device" : "Input/output error";
}
int errno_of(FaultKind kind) { return kind == FaultKind::enospc ? ENOSPC : EIO; }

TEST_P(FaultTest, NameWrapsTheInnerName) {
  FaultBackend fault(inner(), FaultSpec{});
  EXPECT_EQ(fault.name(), GetParam() == Kind::posix ? "fault(posix)" : "fault(io_uring)");
  EXPECT_EQ(fault.direct_alignment(), 4096u);
}

TEST_P(FaultTest, InvalidSpecsAreRejected) {
  EXPECT_EQ(thrown_by([] { FaultBackend(nullptr, FaultSpec{}); }).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(thrown_by([&] { FaultBackend(inner(), {.nth = -1}); }).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(thrown_by([&] { FaultBackend(inner(), {.kind = FaultKind::latency, .latency = -1ms}); }).code(),
            ErrorCode::invalid_argument);
}

TEST_P(FaultTest, WriteFaultCompletesWithTheInjectedErrorAndWritesNothing) {
  for (FaultKind kind : {FaultKind::eio, FaultKind::enospc}) {
    SCOPED_TRACE(strerror_text(kind));
    FaultBackend fault(inner(), {.op = FaultOp::write, .kind = kind, .nth = 2});
    const fs::path path = dir_ / ("w-" + std::to_string(static_cast<int>(kind)) + ".bin");
    const FileHandle file = fault.create(path, {});
    const auto a = pattern(1, 4096), b = pattern(2, 4096), c = pattern(3, 4096);
    EXPECT_EQ(write_and_wait(fault, file, 0, a.data(), a.size()), nullptr);
    EXPECT_FALSE(fault.fired());

    std::promise<std::pair<std::exception_ptr, std::thread::id>> second;
    fault.write(file, 4096, b.data(), b.size(), [&](std::exception_ptr e) {
      second.set_value({std::move(e), std::this_thread::get_id()});
    });
    const auto [error, completer] = second.get_future().get();
    // Like a real failure: delivered on the backend's completion thread, not the caller's.
    EXPECT_NE(completer, std::this_thread::get_id());
    ASSERT_NE(error, nullptr);
    const Error e = error_of(error);
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_EQ(e.errno_value(), errno_of(kind));
    EXPECT_EQ(std::string(e.what()), write_call() + ": " + strerror_text(kind) + " (injected, file=" +
                                         path.string() + ", offset=4096, bytes=4096)");
    EXPECT_TRUE(fault.fired());

    EXPECT_EQ(write_and_wait(fault, file, 8192, c.data(), c.size()), nullptr);
    EXPECT_EQ(fault.calls(FaultOp::write), 3);
    fault.close(file);
    std::vector<std::byte> expected = a;
    expected.resize(8192, std::byte{0});  // the failed write left its range a hole
    expected.insert(expected.end(), c.begin(), c.end());
    EXPECT_EQ(first_difference(read_bytes(path), expected), "");
  }
}

TEST_P(FaultTest, SyncFaultThrowsLikeFsync) {
  for (FaultKind kind : {FaultKind::eio, FaultKind::enospc}) {
    SCOPED_TRACE(strerror_text(kind));
    FaultBackend fault(inner(), {.op = FaultOp::sync, .kind = kind, .nth = 1});
    const fs::path path = dir_ / "s.bin";
    const FileHandle file = fault.create(path, {});
    const Error e = thrown_by([&] { fault.sync(file); });
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_EQ(e.errno_value(), errno_of(kind));
    EXPECT_EQ(std::string(e.what()), "fsync: " + strerror_text(kind) + " (injected, file=" + path.string() + ")");
    EXPECT_TRUE(fault.fired());
    fault.sync(file);  // only the first call fails
    fault.close(file);
  }
}

// One operation's fault: how to call it, what the message must be, and how to tell whether the
// operation took effect.
struct NamespaceCase {
  FaultOp op;
  std::function<void(IoBackend&, commit::FileSystem&)> call;
  std::string message_tail;  // after "<call>: <strerror> "
  std::string call_name;
  std::function<bool()> took_effect;
};

TEST_P(FaultTest, NamespaceFaultsThrowLikeTheRealCallAndChangeNothing) {
  for (FaultKind kind : {FaultKind::eio, FaultKind::enospc}) {
    SCOPED_TRACE(strerror_text(kind));
    const fs::path base = dir_ / ("k" + std::to_string(static_cast<int>(kind)));
    fs::create_directory(base);
    write_file(base / "from", "from");
    write_file(base / "a", "a");
    write_file(base / "b", "b");
    write_file(base / "victim", "v");
    const std::vector<NamespaceCase> cases = {
        {FaultOp::create, [&](IoBackend& io, commit::FileSystem&) { io.close(io.create(base / "created", {})); },
         "(injected, file=" + (base / "created").string() + ")", "open",
         [&] { return fs::exists(base / "created"); }},
        {FaultOp::rename, [&](IoBackend&, commit::FileSystem& fs) { fs.rename(base / "from", base / "to"); },
         "(injected, from=" + (base / "from").string() + ", to=" + (base / "to").string() + ")", "rename",
         [&] { return fs::exists(base / "to"); }},
        {FaultOp::exchange, [&](IoBackend&, commit::FileSystem& fs) { fs.exchange(base / "a", base / "b"); },
         "(injected, a=" + (base / "a").string() + ", b=" + (base / "b").string() + ")", "renameat2",
         [&] { return read_file(base / "a") == "b"; }},
        {FaultOp::remove, [&](IoBackend&, commit::FileSystem& fs) { fs.remove(base / "victim"); },
         "(injected, file=" + (base / "victim").string() + ")", "unlink",
         [&] { return !fs::exists(base / "victim"); }},
        {FaultOp::make_directory, [&](IoBackend&, commit::FileSystem& fs) { fs.make_directory(base / "dir"); },
         "(injected, dir=" + (base / "dir").string() + ")", "mkdir",
         [&] { return fs::is_directory(base / "dir"); }},
        {FaultOp::sync_directory, [&](IoBackend&, commit::FileSystem& fs) { fs.sync_directory(base); },
         "(injected, dir=" + base.string() + ")", "fsync", nullptr},
        {FaultOp::write_file, [&](IoBackend&, commit::FileSystem& fs) { fs.write_file_durably(base / "index.json", "{}"); },
         "(injected, file=" + (base / "index.json").string() + ", offset=0, bytes=2)", "pwrite",
         [&] { return read_file(base / "index.json") == "{}"; }},
    };
    for (const NamespaceCase& c : cases) {
      SCOPED_TRACE(c.call_name + " " + c.message_tail);
      auto plan = std::make_shared<FaultPlan>(FaultSpec{.op = c.op, .kind = kind, .nth = 1});
      FaultBackend fault(inner(), plan);
      commit::FaultFileSystem fault_fs(commit::make_posix_file_system(), plan);
      const Error e = thrown_by([&] { c.call(fault, fault_fs); });
      EXPECT_EQ(e.code(), ErrorCode::io);
      EXPECT_EQ(e.errno_value(), errno_of(kind));
      EXPECT_EQ(std::string(e.what()), c.call_name + ": " + strerror_text(kind) + " " + c.message_tail);
      EXPECT_TRUE(fault.fired());
      EXPECT_EQ(fault.calls(c.op), 1);
      if (c.took_effect) {
        EXPECT_FALSE(c.took_effect()) << "the failed call changed the filesystem";
      }
      // The second call is not the nth: it reaches the filesystem.
      if (c.op == FaultOp::write_file) fs::remove(base / "index.json");  // created exclusively
      try {
        c.call(fault, fault_fs);
      } catch (const Error& again) {
        // RENAME_EXCHANGE may be missing on this filesystem; anything else is a failure.
        ASSERT_TRUE(c.op == FaultOp::exchange && again.code() == ErrorCode::unavailable) << again.what();
        continue;
      }
      if (c.took_effect) {
        EXPECT_TRUE(c.took_effect());
      }
    }
  }
}

TEST_P(FaultTest, NthPicksExactlyTheNthCall) {
  FaultBackend fault(inner(), {.op = FaultOp::sync, .kind = FaultKind::eio, .nth = 3});
  const FileHandle file = fault.create(dir_ / "f", {});
  fault.sync(file);
  fault.sync(file);
  EXPECT_FALSE(fault.fired());
  EXPECT_EQ(thrown_by([&] { fault.sync(file); }).errno_value(), EIO);
  EXPECT_TRUE(fault.fired());
  fault.sync(file);
  fault.sync(file);
  EXPECT_EQ(fault.calls(FaultOp::sync), 5);
  fault.close(file);
}

TEST_P(FaultTest, NthPicksExactlyTheNthWrite) {
  FaultBackend fault(inner(), {.op = FaultOp::write, .kind = FaultKind::enospc, .nth = 4});
  const fs::path path = dir_ / "w.bin";
  const FileHandle file = fault.create(path, {});
  const auto bytes = pattern(5, 6 * 1000);
  std::vector<int> failed;
  for (int i = 0; i < 6; ++i) {
    if (write_and_wait(fault, file, i * 1000, bytes.data() + i * 1000, 1000) != nullptr) failed.push_back(i + 1);
  }
  EXPECT_EQ(failed, std::vector<int>{4});
  fault.close(file);
  auto expected = bytes;
  std::fill(expected.begin() + 3000, expected.begin() + 4000, std::byte{0});
  EXPECT_EQ(first_difference(read_bytes(path), expected), "");
}

TEST_P(FaultTest, NthZeroFailsEveryCall) {
  commit::FaultFileSystem fault(commit::make_posix_file_system(), {.op = FaultOp::make_directory, .kind = FaultKind::eio, .nth = 0});
  for (int i = 0; i < 3; ++i) {
    const fs::path path = dir_ / ("d" + std::to_string(i));
    EXPECT_EQ(thrown_by([&] { fault.make_directory(path); }).errno_value(), EIO);
    EXPECT_FALSE(fs::exists(path));
  }
  EXPECT_EQ(fault.plan()->calls(FaultOp::make_directory), 3);
}

TEST_P(FaultTest, CallsAreCountedPerOperation) {
  auto plan = std::make_shared<FaultPlan>(FaultSpec{.op = FaultOp::rename, .kind = FaultKind::eio, .nth = 100});
  FaultBackend fault(inner(), plan);
  commit::FaultFileSystem fault_fs(commit::make_posix_file_system(), plan);
  const FileHandle file = fault.create(dir_ / "f", {});
  const auto bytes = pattern(6, 10);
  EXPECT_EQ(write_and_wait(fault, file, 0, bytes.data(), bytes.size()), nullptr);
  EXPECT_EQ(write_and_wait(fault, file, 10, bytes.data(), bytes.size()), nullptr);
  fault.sync(file);
  fault.close(file);
  fault_fs.rename(dir_ / "f", dir_ / "g");
  EXPECT_EQ(fault.calls(FaultOp::create), 1);
  EXPECT_EQ(fault.calls(FaultOp::write), 2);
  EXPECT_EQ(fault.calls(FaultOp::sync), 1);
  EXPECT_EQ(fault.calls(FaultOp::rename), 1);
  EXPECT_EQ(fault.calls(FaultOp::remove), 0);
  EXPECT_EQ(fault.calls(FaultOp::close), 1);
  EXPECT_EQ(fault.calls(FaultOp::any), 6);  // both seams together: create, 2 writes, sync, close, rename
  EXPECT_FALSE(fault.fired());
  EXPECT_EQ(fault.stats().writes, 2u);
  EXPECT_EQ(fault.stats().bytes_written, 20u);
}

TEST_P(FaultTest, ShortWriteIsContinuedToTheFullContent) {
  auto recording = std::make_unique<RecordingBackend>(inner());
  RecordingBackend& seen = *recording;
  FaultBackend fault(std::move(recording), {.op = FaultOp::write, .kind = FaultKind::short_write, .nth = 2});
  const fs::path path = dir_ / "short.bin";
  const FileHandle file = fault.create(path, {});
  const auto bytes = pattern(7, 30000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(write_and_wait(fault, file, i * 10000, bytes.data() + i * 10000, 10000), nullptr);
  }
  EXPECT_TRUE(fault.fired());
  // The inner backend got the second write in two parts.
  const std::set<std::pair<std::uint64_t, std::size_t>> expected_writes = {
      {0, 10000}, {10000, 5000}, {15000, 5000}, {20000, 10000}};
  EXPECT_EQ(seen.writes(), expected_writes);
  fault.close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(FaultTest, EveryWriteShortUnderConcurrencyStillGivesTheFullFile) {
  FaultBackend fault(inner(), {.op = FaultOp::write, .kind = FaultKind::short_write, .nth = 0});
  constexpr int kThreads = 6;
  constexpr int kWrites = 40;
  constexpr std::size_t kSize = 7001;
  const auto bytes = pattern(8, kThreads * kWrites * kSize);
  const fs::path path = dir_ / "many.bin";
  const FileHandle file = fault.create(path, {});
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kThreads * kWrites; i += kThreads) {
        fault.write(file, i * kSize, bytes.data() + i * kSize, kSize,
                    [&](std::exception_ptr e) { (e ? failed : ok).fetch_add(1); });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  fault.drain();
  EXPECT_EQ(ok.load(), kThreads * kWrites);
  EXPECT_EQ(failed.load(), 0);
  // Two inner writes per write: the first half and its continuation.
  EXPECT_EQ(fault.stats().writes, 2u * kThreads * kWrites);
  fault.close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(FaultTest, ShortWriteOnADirectFileSplitsAtAnAlignedBoundary) {
  auto recording = std::make_unique<RecordingBackend>(inner());
  RecordingBackend& seen = *recording;
  FaultBackend fault(std::move(recording), {.op = FaultOp::write, .kind = FaultKind::short_write, .nth = 0});
  const std::size_t align = fault.direct_alignment();
  const std::size_t total = 16384 + 12288 + 4096;
  std::unique_ptr<std::byte, decltype(&std::free)> buffer(static_cast<std::byte*>(std::aligned_alloc(align, total)),
                                                          &std::free);
  const auto bytes = pattern(9, total);
  std::copy(bytes.begin(), bytes.end(), buffer.get());
  const fs::path path = dir_ / "direct.bin";
  FileHandle file;
  try {
    file = fault.create(path, {.direct = true});
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unavailable) throw;
    GTEST_SKIP() << "the temporary filesystem refuses O_DIRECT: " << e.what();
  }
  EXPECT_EQ(write_and_wait(fault, file, 0, buffer.get(), 16384), nullptr);
  EXPECT_EQ(write_and_wait(fault, file, 16384, buffer.get() + 16384, 12288), nullptr);
  EXPECT_EQ(write_and_wait(fault, file, 28672, buffer.get() + 28672, 4096), nullptr);
  const std::set<std::pair<std::uint64_t, std::size_t>> expected_writes = {
      {0, 8192}, {8192, 8192},          // half of 16 KiB is aligned already
      {16384, 4096}, {20480, 8192},     // half of 12 KiB rounded down to the alignment
      {28672, 4096}};                   // one block cannot be split: written whole
  EXPECT_EQ(seen.writes(), expected_writes);
  fault.close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(FaultTest, ShortWriteOfOneByteIsNotAFault) {
  FaultBackend fault(inner(), {.op = FaultOp::write, .kind = FaultKind::short_write, .nth = 1});
  const fs::path path = dir_ / "one.bin";
  const FileHandle file = fault.create(path, {});
  const auto bytes = pattern(10, 1);
  EXPECT_EQ(write_and_wait(fault, file, 0, bytes.data(), 1), nullptr);
  EXPECT_FALSE(fault.fired());
  fault.close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(FaultTest, ShortWriteWhoseFirstPartFailsReportsOnce) {
  FaultBackend fault(inner(), {.op = FaultOp::write, .kind = FaultKind::short_write, .nth = 1});
  const FileHandle file = fault.create(dir_ / "closed.bin", {});
  fault.close(file);
  const auto bytes = pattern(11, 100);
  std::atomic<int> completions{0};
  std::exception_ptr error;
  fault.write(file, 0, bytes.data(), bytes.size(), [&](std::exception_ptr e) {
    error = std::move(e);
    completions.fetch_add(1);
  });
  fault.drain();
  EXPECT_EQ(completions.load(), 1);
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(error_of(error).errno_value(), EBADF);
}

TEST_P(FaultTest, ShortWriteSpecLeavesOtherOperationsAlone) {
  FaultBackend fault(inner(), {.op = FaultOp::sync, .kind = FaultKind::short_write, .nth = 0});
  const FileHandle file = fault.create(dir_ / "f", {});
  fault.sync(file);
  fault.close(file);
  EXPECT_FALSE(fault.fired());
}

TEST_P(FaultTest, ReadFaultsFailTheNthReadAndShortReadsAreContinued) {
  const auto bytes = testing::pattern(5, 40000);
  testing::write_file(dir_ / "data", std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  const auto read_and_wait = [](IoBackend& backend, FileHandle file, std::uint64_t offset, std::byte* out, std::size_t n) {
    std::promise<std::exception_ptr> result;
    auto future = result.get_future();
    backend.read(file, offset, out, n, [&result](std::exception_ptr e) { result.set_value(std::move(e)); });
    return future.get();
  };
  {
    FaultBackend fault(inner(), FaultSpec{.op = FaultOp::read, .kind = FaultKind::eio, .nth = 2});
    ScopedFile file = fault.open_read_scoped(dir_ / "data", false);
    std::vector<std::byte> out(bytes.size());
    EXPECT_EQ(read_and_wait(fault, file.get(), 0, out.data(), 20000), nullptr);
    const Error error = testing::error_of(read_and_wait(fault, file.get(), 20000, out.data() + 20000, 20000));
    EXPECT_EQ(error.code(), ErrorCode::io);
    EXPECT_NE(std::string(error.what()).find("injected"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("offset=20000"), std::string::npos) << error.what();
    EXPECT_TRUE(fault.fired());
  }
  {
    FaultBackend fault(inner(), FaultSpec{.op = FaultOp::read, .kind = FaultKind::short_write, .nth = 0});
    ScopedFile file = fault.open_read_scoped(dir_ / "data", false);
    std::vector<std::byte> out(bytes.size());
    for (std::size_t at = 0; at < out.size(); at += 10000) EXPECT_EQ(read_and_wait(fault, file.get(), at, out.data() + at, 10000), nullptr);
    EXPECT_EQ(out, bytes);
    EXPECT_TRUE(fault.fired());
  }
}

TEST_P(FaultTest, LatencyDelaysButSucceeds) {
  // No timing assertion: only that the slowed calls still do their work.
  FaultBackend slow_writes(inner(), {.op = FaultOp::write, .kind = FaultKind::latency, .nth = 0, .latency = 5ms});
  const fs::path path = dir_ / "slow.bin";
  const FileHandle file = slow_writes.create(path, {});
  const auto bytes = pattern(12, 3000);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(write_and_wait(slow_writes, file, i * 1000, bytes.data() + i * 1000, 1000), nullptr);
  }
  EXPECT_TRUE(slow_writes.fired());
  slow_writes.close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");

  commit::FaultFileSystem slow_renames(commit::make_posix_file_system(),
                                       {.op = FaultOp::rename, .kind = FaultKind::latency, .nth = 1, .latency = 5ms});
  slow_renames.rename(path, dir_ / "renamed.bin");
  EXPECT_TRUE(slow_renames.plan()->fired());
  EXPECT_EQ(first_difference(read_bytes(dir_ / "renamed.bin"), bytes), "");

  commit::FaultFileSystem slow_files(commit::make_posix_file_system(),
                                     {.op = FaultOp::write_file, .kind = FaultKind::latency, .nth = 1, .latency = 5ms});
  slow_files.write_file_durably(dir_ / "index.json", "{}");
  EXPECT_EQ(read_file(dir_ / "index.json"), "{}");
}

TEST_P(FaultTest, DrainWaitsForAnInjectedWriteError) {
  FaultBackend fault(inner(), {.op = FaultOp::write, .kind = FaultKind::eio, .nth = 0});
  const FileHandle file = fault.create(dir_ / "f", {});
  const auto bytes = pattern(13, 100);
  std::atomic<bool> reported{false};
  fault.write(file, 0, bytes.data(), bytes.size(), [&](std::exception_ptr e) {
    std::this_thread::sleep_for(10ms);  // widens the window in which a drain that did not wait would return
    reported = e != nullptr;
  });
  fault.drain();
  EXPECT_TRUE(reported.load());
  fault.close(file);
}

TEST_P(FaultTest, RegistrationAndStatsReachTheInnerBackend) {
  FaultBackend fault(inner(), {.op = FaultOp::rename, .nth = 1000});  // never fires here
  std::vector<std::byte> region = pattern(14, 8192);
  const std::span<std::byte> regions[] = {region};
  fault.register_buffers(regions);
  const fs::path path = dir_ / "r.bin";
  const FileHandle file = fault.create(path, {});
  EXPECT_EQ(write_and_wait(fault, file, 0, region.data(), region.size()), nullptr);
  fault.close(file);
  const BackendStats stats = fault.stats();
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.bytes_written, 8192u);
  if (GetParam() == Kind::io_uring && stats.registered_regions == 1) {
    EXPECT_EQ(stats.registered_buffer_writes, 1u);
  }
  EXPECT_EQ(first_difference(read_bytes(path), region), "");
}

INSTANTIATE_TEST_SUITE_P(Inner, FaultTest, ::testing::Values(Kind::posix, Kind::io_uring), kind_name);

}  // namespace
}  // namespace quicksave::io
