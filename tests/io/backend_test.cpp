// Tests of the posix and io_uring backends against the IoBackend contract: exact file contents
// under concurrent writes, preallocation, registered buffers, O_DIRECT, and the errors (code,
// errno, message) of every operation. Each test runs on both backends; io_uring is skipped, with
// the reason, where the ring cannot be created.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/backend.hpp"
#include "test_support.hpp"
#include "quicksave/error.hpp"

namespace quicksave::io {
namespace {

using testing::read_file;
using testing::TempDir;
using testing::write_file;
using testing::error_of;
using testing::first_difference;
using testing::pattern;
using testing::read_bytes;
using testing::thrown_by;

// Queues one write and waits for its completion; returns the error (nullptr on success).
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

// Read from /proc rather than with umask(2), which could only read it by changing it.
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  }
  ADD_FAILURE() << "no Umask line in /proc/self/status";
  return 022;
}

// Whether some descriptor of this process refers to `path`.
bool open_in_this_process(const fs::path& path) {
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(entry.path(), ec) == path) return true;
  }
  return false;
}

struct AlignedFree {
  void operator()(std::byte* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<std::byte, AlignedFree>;
AlignedBuffer aligned_buffer(std::size_t alignment, std::size_t size) {
  return AlignedBuffer(static_cast<std::byte*>(std::aligned_alloc(alignment, size)));
}

enum class Kind { posix, io_uring };

std::string kind_name(const ::testing::TestParamInfo<Kind>& info) {
  return info.param == Kind::posix ? "posix" : "io_uring";
}

class BackendTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::posix) {
      backend_ = make_posix_backend(4);
      return;
    }
    try {
      // A small ring, so that tests also exercise writes waiting in the backlog.
      backend_ = make_uring_backend(8);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::unavailable) throw;
      GTEST_SKIP() << "io_uring unavailable here: " << e.what();
    }
  }

  // "pwrite" or "io_uring write": the call name in write errors.
  std::string write_call() const { return GetParam() == Kind::posix ? "pwrite" : "io_uring write"; }

  std::unique_ptr<IoBackend> backend_;
  TempDir dir_;
};

TEST_P(BackendTest, NameSaysWhichBackend) {
  EXPECT_EQ(backend_->name(), GetParam() == Kind::posix ? "posix" : "io_uring");
  EXPECT_EQ(backend_->direct_alignment(), 4096u);
}

TEST_P(BackendTest, ConcurrentWritesFromManyThreadsLandExactly) {
  constexpr int kThreads = 8;
  constexpr int kWritesPerThread = 64;
  struct Segment {
    std::uint64_t offset;
    std::vector<std::byte> bytes;
  };
  std::mt19937 rng(1234);
  std::vector<Segment> segments;
  std::vector<std::byte> expected;
  for (int i = 0; i < kThreads * kWritesPerThread; ++i) {
    const std::size_t size = 1 + rng() % 20000;  // odd sizes and offsets on purpose
    segments.push_back(Segment{expected.size(), pattern(i, size)});
    expected.insert(expected.end(), segments.back().bytes.begin(), segments.back().bytes.end());
  }

  const fs::path path = dir_ / "model-00001-of-00001.safetensors";
  const FileHandle file = backend_->create(path, {});
  ASSERT_TRUE(file);
  std::atomic<int> succeeded{0};
  std::atomic<int> failed{0};
  std::mutex ids_mutex;
  std::set<std::thread::id> submitters;
  std::set<std::thread::id> completers;
  std::string first_error;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      {
        std::lock_guard lock(ids_mutex);
        submitters.insert(std::this_thread::get_id());
      }
      // Each thread writes every kThreads-th segment, last first: nothing arrives in file order.
      for (int i = kThreads * kWritesPerThread - kThreads + t; i >= 0; i -= kThreads) {
        const Segment& s = segments[i];
        backend_->write(file, s.offset, s.bytes.data(), s.bytes.size(), [&](std::exception_ptr e) {
          (e ? failed : succeeded).fetch_add(1);
          std::lock_guard lock(ids_mutex);
          completers.insert(std::this_thread::get_id());
          if (e && first_error.empty()) first_error = error_of(e).what();
        });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  backend_->drain();

  EXPECT_EQ(succeeded.load(), kThreads * kWritesPerThread);
  EXPECT_EQ(failed.load(), 0) << first_error;
  for (const auto& id : completers) EXPECT_EQ(submitters.count(id), 0u) << "a completion ran on a submitting thread";
  const BackendStats stats = backend_->stats();
  EXPECT_EQ(stats.writes, static_cast<std::uint64_t>(kThreads * kWritesPerThread));
  EXPECT_EQ(stats.bytes_written, expected.size());
  EXPECT_EQ(stats.failed_writes, 0u);
  backend_->sync(file);
  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), expected), "");
}

TEST_P(BackendTest, CompletionsMayQueueFurtherWrites) {
  // More chains than the ring has room for, each writing its next piece from its completion:
  // the completion thread must never wait for room only it can make.
  constexpr int kChains = 32;
  constexpr int kLinks = 40;
  constexpr std::size_t kPiece = 3000;
  const std::vector<std::byte> expected = pattern(77, kChains * kLinks * kPiece);
  const fs::path path = dir_ / "chained.bin";
  const FileHandle file = backend_->create(path, {});
  std::atomic<int> errors{0};
  std::atomic<int> completions{0};
  struct Chain {
    std::function<void(int)> next;
  };
  std::vector<Chain> chains(kChains);
  for (int c = 0; c < kChains; ++c) {
    chains[c].next = [&, c](int link) {
      const std::size_t offset = (static_cast<std::size_t>(link) * kChains + c) * kPiece;
      backend_->write(file, offset, expected.data() + offset, kPiece, [&, c, link](std::exception_ptr e) {
        if (e) errors.fetch_add(1);
        completions.fetch_add(1);
        if (link + 1 < kLinks) chains[c].next(link + 1);
      });
    };
  }
  for (int c = 0; c < kChains; ++c) chains[c].next(0);
  backend_->drain();
  EXPECT_EQ(completions.load(), kChains * kLinks);
  EXPECT_EQ(errors.load(), 0);
  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), expected), "");
}

TEST_P(BackendTest, DrainFromACompletionIsRefused) {
  const FileHandle file = backend_->create(dir_ / "f.bin", {});
  const auto bytes = pattern(1, 100);
  // Code and message, not the Error: its message is a reference-counted string (see write_and_wait).
  std::promise<std::pair<ErrorCode, std::string>> refused;
  backend_->write(file, 0, bytes.data(), bytes.size(), [&](std::exception_ptr) {
    try {
      backend_->drain();
      refused.set_value({ErrorCode::internal, "drain returned"});
    } catch (const Error& e) {
      refused.set_value({e.code(), e.what()});
    }
  });
  const auto [code, message] = refused.get_future().get();
  EXPECT_EQ(code, ErrorCode::failed_precondition) << message;
  EXPECT_NE(message.find("drain"), std::string::npos) << message;
  backend_->drain();
  backend_->close(file);
}

TEST_P(BackendTest, ZeroLengthWriteCompletes) {
  const fs::path path = dir_ / "empty.bin";
  const FileHandle file = backend_->create(path, {});
  const auto bytes = pattern(2, 16);
  EXPECT_EQ(write_and_wait(*backend_, file, 0, bytes.data(), 0), nullptr);
  backend_->close(file);
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST_P(BackendTest, CreateTruncatesAnExistingFile) {
  const fs::path path = dir_ / "old.bin";
  write_file(path, std::string(5000, 'x'));
  const FileHandle file = backend_->create(path, {});
  const auto bytes = pattern(3, 10);
  EXPECT_EQ(write_and_wait(*backend_, file, 0, bytes.data(), bytes.size()), nullptr);
  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u & ~current_umask());
}

TEST_P(BackendTest, PreallocateThenTruncateToTheData) {
  const fs::path path = dir_ / "prealloc.bin";
  const FileHandle file = backend_->create(path, {.preallocate = 1 << 20});
  // fallocate without KEEP_SIZE makes the file that long at once.
  EXPECT_EQ(fs::file_size(path), 1u << 20);
  const auto bytes = pattern(4, 70000);
  EXPECT_EQ(write_and_wait(*backend_, file, 0, bytes.data(), bytes.size()), nullptr);
  backend_->truncate(file, bytes.size());
  EXPECT_EQ(fs::file_size(path), bytes.size());
  backend_->sync(file);
  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(BackendTest, TruncateCanGrowWithZeros) {
  const fs::path path = dir_ / "grow.bin";
  const FileHandle file = backend_->create(path, {});
  const auto bytes = pattern(5, 100);
  EXPECT_EQ(write_and_wait(*backend_, file, 0, bytes.data(), bytes.size()), nullptr);
  backend_->truncate(file, 300);
  backend_->close(file);
  auto expected = bytes;
  expected.resize(300, std::byte{0});
  EXPECT_EQ(first_difference(read_bytes(path), expected), "");
}

TEST_P(BackendTest, RegisteredBuffersServeWritesFromInsideThem) {
  std::vector<std::byte> region_a = pattern(10, 64 * 1024);
  std::vector<std::byte> region_b = pattern(11, 32 * 1024);
  const std::vector<std::byte> outside = pattern(12, 8 * 1024);
  const std::span<std::byte> regions[] = {region_a, region_b};
  backend_->register_buffers(regions);
  if (GetParam() == Kind::io_uring) {
    if (backend_->stats().registered_regions == 0) GTEST_SKIP() << "the kernel refused to register buffers here";
    EXPECT_EQ(backend_->stats().registered_regions, 2u);
  } else {
    EXPECT_EQ(backend_->stats().registered_regions, 0u);
  }

  const fs::path path = dir_ / "registered.bin";
  const FileHandle file = backend_->create(path, {});
  // Inside region a (two pieces), all of region b, a plain buffer, and a range running past the
  // end of region a (not inside one region: a plain write).
  struct Piece {
    const std::byte* data;
    std::size_t size;
  };
  const Piece pieces[] = {{region_a.data(), 1000},
                          {region_a.data() + 1000, 30000},
                          {region_b.data(), region_b.size()},
                          {outside.data(), outside.size()},
                          {region_a.data() + 60000, region_a.size() - 60000}};
  std::vector<std::byte> expected;
  for (const Piece& p : pieces) {
    EXPECT_EQ(write_and_wait(*backend_, file, expected.size(), p.data, p.size), nullptr);
    expected.insert(expected.end(), p.data, p.data + p.size);
  }
  const std::uint64_t fixed_writes = backend_->stats().registered_buffer_writes;
  EXPECT_EQ(fixed_writes, GetParam() == Kind::io_uring ? 4u : 0u);

  // Registering again replaces the set: region a alone now.
  const std::span<std::byte> only_a[] = {region_a};
  backend_->register_buffers(only_a);
  EXPECT_EQ(backend_->stats().registered_regions, GetParam() == Kind::io_uring ? 1u : 0u);
  EXPECT_EQ(write_and_wait(*backend_, file, expected.size(), region_b.data(), 500), nullptr);
  expected.insert(expected.end(), region_b.data(), region_b.data() + 500);
  EXPECT_EQ(write_and_wait(*backend_, file, expected.size(), region_a.data() + 7, 500), nullptr);
  expected.insert(expected.end(), region_a.data() + 7, region_a.data() + 507);
  EXPECT_EQ(backend_->stats().registered_buffer_writes, fixed_writes + (GetParam() == Kind::io_uring ? 1u : 0u));

  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), expected), "");
}

TEST_P(BackendTest, DirectWritesOfAlignedChunks) {
  const std::size_t align = backend_->direct_alignment();
  constexpr std::size_t kChunk = 64 * 1024;
  constexpr int kChunks = 8;
  AlignedBuffer buffer = aligned_buffer(align, kChunk * kChunks);
  const auto bytes = pattern(20, kChunk * kChunks);
  std::copy(bytes.begin(), bytes.end(), buffer.get());
  // Registered when the backend can: O_DIRECT with write_fixed is the fast path.
  const std::span<std::byte> regions[] = {{buffer.get(), kChunk * kChunks}};
  backend_->register_buffers(regions);

  const fs::path path = dir_ / "direct.bin";
  FileHandle file;
  try {
    file = backend_->create(path, {.direct = true, .preallocate = kChunk * kChunks});
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unavailable) throw;
    GTEST_SKIP() << "the temporary filesystem refuses O_DIRECT: " << e.what();
  }
  std::atomic<int> errors{0};
  for (int i = kChunks - 1; i >= 0; --i) {
    backend_->write(file, i * kChunk, buffer.get() + i * kChunk, kChunk, [&](std::exception_ptr e) {
      if (e) errors.fetch_add(1);
    });
  }
  backend_->drain();
  EXPECT_EQ(errors.load(), 0);
  backend_->sync(file);
  backend_->close(file);
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

TEST_P(BackendTest, WriteToAClosedHandleCompletesWithEbadf) {
  const FileHandle file = backend_->create(dir_ / "closed.bin", {});
  backend_->close(file);
  const auto bytes = pattern(30, 64);
  const std::exception_ptr error = write_and_wait(*backend_, file, 128, bytes.data(), bytes.size());
  ASSERT_NE(error, nullptr);
  const Error e = error_of(error);
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), EBADF);
  EXPECT_EQ(std::string(e.what()),
            write_call() + ": Bad file descriptor (handle=" + std::to_string(file.id) + " is not open)");

  const Error never_opened = error_of(write_and_wait(*backend_, FileHandle{}, 0, bytes.data(), bytes.size()));
  EXPECT_EQ(never_opened.errno_value(), EBADF);
  EXPECT_EQ(backend_->stats().failed_writes, 2u);
}

TEST_P(BackendTest, FailedWriteNamesCallFileOffsetAndBytes) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full here";
  // /dev/full fails every write with ENOSPC: a real device error, not a simulated one.
  const FileHandle file = backend_->create("/dev/full", {});
  const auto bytes = pattern(31, 4096);
  const std::exception_ptr error = write_and_wait(*backend_, file, 8192, bytes.data(), bytes.size());
  ASSERT_NE(error, nullptr);
  const Error e = error_of(error);
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), ENOSPC);
  EXPECT_EQ(std::string(e.what()),
            write_call() + ": No space left on device (file=/dev/full, offset=8192, bytes=4096)");
  const BackendStats stats = backend_->stats();
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.failed_writes, 1u);
  EXPECT_EQ(stats.bytes_written, 0u);
  backend_->start_writeback(file, 0, 4096);  // a hint: never fails, even where unsupported
  backend_->close(file);
}

TEST_P(BackendTest, CreateErrorsNameTheFile) {
  const fs::path missing = dir_ / "no-such-dir" / "model.safetensors";
  Error e = thrown_by([&] { backend_->create(missing, {}); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_EQ(std::string(e.what()), "open: No such file or directory (file=" + missing.string() + ")");

  write_file(dir_ / "plain", "x");
  e = thrown_by([&] { backend_->create(dir_ / "plain" / "child", {}); });
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), ENOTDIR);

  e = thrown_by([&] { backend_->create(dir_.path(), {}); });
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), EISDIR);
  EXPECT_EQ(std::string(e.what()), "open: Is a directory (file=" + dir_.path().string() + ")");
}

TEST_P(BackendTest, OperationsOnAClosedHandleThrowEbadf) {
  const FileHandle file = backend_->create(dir_ / "f.bin", {});
  backend_->close(file);
  const std::string tail = ": Bad file descriptor (handle=" + std::to_string(file.id) + " is not open)";
  Error e = thrown_by([&] { backend_->sync(file); });
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), EBADF);
  EXPECT_EQ(std::string(e.what()), "fsync" + tail);
  e = thrown_by([&] { backend_->truncate(file, 10); });
  EXPECT_EQ(std::string(e.what()), "ftruncate" + tail);
  e = thrown_by([&] { backend_->close(file); });
  EXPECT_EQ(std::string(e.what()), "close" + tail);
  backend_->start_writeback(file, 0, 10);  // a hint: silently nothing
}

TEST_P(BackendTest, HandlesAreNotReused) {
  const FileHandle a = backend_->create(dir_ / "a", {});
  backend_->close(a);
  const FileHandle b = backend_->create(dir_ / "b", {});
  EXPECT_NE(a.id, b.id);
  // The stale handle must not reach the new file.
  const auto bytes = pattern(32, 10);
  EXPECT_NE(write_and_wait(*backend_, a, 0, bytes.data(), bytes.size()), nullptr);
  backend_->close(b);
  EXPECT_EQ(fs::file_size(dir_ / "b"), 0u);
}

TEST_P(BackendTest, DestroyingTheBackendCompletesQueuedWritesAndClosesForgottenFiles) {
  const fs::path path = dir_ / "late.bin";
  const FileHandle file = backend_->create(path, {});
  const auto bytes = pattern(40, 256 * 1024);
  std::atomic<int> done{0};
  for (int i = 0; i < 64; ++i) {
    backend_->write(file, i * 4096, bytes.data() + i * 4096, 4096, [&](std::exception_ptr e) {
      if (!e) done.fetch_add(1);
    });
  }
  EXPECT_TRUE(open_in_this_process(path));
  backend_.reset();  // no drain(), no close(): the destructor must do both
  EXPECT_EQ(done.load(), 64);
  EXPECT_FALSE(open_in_this_process(path));
  EXPECT_EQ(first_difference(read_bytes(path), bytes), "");
}

// Reads: many in flight into distinct places of one buffer, from a file written with pwrite.
std::exception_ptr read_and_wait(IoBackend& backend, FileHandle file, std::uint64_t offset, std::byte* buffer, std::size_t length) {
  std::promise<std::exception_ptr> result;
  auto future = result.get_future();
  backend.read(file, offset, buffer, length, [&result](std::exception_ptr e) { result.set_value(std::move(e)); });
  return future.get();
}

TEST_P(BackendTest, ManyReadsInFlightLandExactly) {
  const auto bytes = testing::pattern(11, 1 << 20);
  testing::write_file(dir_ / "data", std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  ScopedFile file = backend_->open_read_scoped(dir_ / "data", false);
  std::vector<std::byte> out(bytes.size());
  std::atomic<int> failures{0};
  constexpr std::size_t kPiece = 12345;  // odd sizes: pieces straddle pages
  for (std::size_t at = 0; at < out.size(); at += kPiece) {
    backend_->read(file.get(), at, out.data() + at, std::min(kPiece, out.size() - at), [&](std::exception_ptr e) {
      if (e) ++failures;
    });
  }
  backend_->drain();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(out, bytes);
  const auto stats = backend_->stats();
  EXPECT_EQ(stats.reads, (bytes.size() + kPiece - 1) / kPiece);
  EXPECT_EQ(stats.bytes_read, bytes.size());
  EXPECT_EQ(stats.writes, 0u);
}

TEST_P(BackendTest, AReadPastTheEndFailsAsCorruptNamingTheFile) {
  testing::write_file(dir_ / "short", std::string(1000, 'x'));
  ScopedFile file = backend_->open_read_scoped(dir_ / "short", false);
  std::vector<std::byte> out(4096);
  const Error error = testing::error_of(read_and_wait(*backend_, file.get(), 500, out.data(), 1000));
  EXPECT_EQ(error.code(), ErrorCode::corrupt);
  EXPECT_NE(std::string(error.what()).find("file ended at offset 1000"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find((dir_ / "short").string()), std::string::npos) << error.what();
  EXPECT_EQ(backend_->stats().failed_reads, 1u);
  // The bytes that were there did arrive.
  EXPECT_EQ(out[0], std::byte{'x'});
  EXPECT_EQ(out[499], std::byte{'x'});
}

TEST_P(BackendTest, OpenReadRefusesWhatIsNotARegularFile) {
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  EXPECT_EQ(thrown_by([&] { backend_->open_read(dir_ / "fifo", false); }).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(thrown_by([&] { backend_->open_read(dir_.path(), false); }).code(), ErrorCode::invalid_argument);
  EXPECT_EQ(thrown_by([&] { backend_->open_read(dir_ / "missing", false); }).code(), ErrorCode::not_found);
}

TEST_P(BackendTest, DirectReadsIntoRegisteredBuffers) {
  const auto bytes = testing::pattern(12, 64 * 1024);
  testing::write_file(dir_ / "data", std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  auto* memory = static_cast<std::byte*>(std::aligned_alloc(4096, bytes.size()));
  std::unique_ptr<std::byte, decltype(&std::free)> owner(memory, &std::free);
  const std::span<std::byte> region(memory, bytes.size());
  backend_->register_buffers(std::span<const std::span<std::byte>>(&region, 1));
  FileHandle handle;
  try {
    handle = backend_->open_read(dir_ / "data", true);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unavailable) throw;
    GTEST_SKIP() << "O_DIRECT refused here: " << e.what();
  }
  ScopedFile file(*backend_, handle);
  for (std::size_t at = 0; at < bytes.size(); at += 16384) {
    EXPECT_EQ(read_and_wait(*backend_, file.get(), at, memory + at, 16384), nullptr);
  }
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), memory));
  EXPECT_EQ(backend_->stats().registered_buffer_reads, GetParam() == Kind::io_uring ? 4u : 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values(Kind::posix, Kind::io_uring), kind_name);

TEST(MakeBackend, PosixKindGivesPosix) {
  std::string reason = "stale";
  auto backend = make_backend({.kind = BackendKind::posix, .posix_threads = 2}, &reason);
  EXPECT_EQ(backend->name(), "posix");
  EXPECT_EQ(reason, "");
}

TEST(MakeBackend, AutomaticPrefersUringAndOtherwiseSaysWhy) {
  bool uring_works = true;
  std::string why;
  try {
    make_uring_backend(16);
  } catch (const Error& e) {
    ASSERT_EQ(e.code(), ErrorCode::unavailable) << e.what();
    uring_works = false;
    why = e.what();
  }
  for (BackendKind kind : {BackendKind::automatic, BackendKind::io_uring}) {
    std::string reason = "stale";
    auto backend = make_backend({.kind = kind}, &reason);
    if (uring_works) {
      EXPECT_EQ(backend->name(), "io_uring");
      EXPECT_EQ(reason, "");
    } else {
      EXPECT_EQ(backend->name(), "posix");
      EXPECT_EQ(reason, "io_uring unavailable: " + why);
    }
  }
  // The reason is optional.
  EXPECT_NE(make_backend({}), nullptr);
}

TEST(MakeBackend, InvalidSizesAreNotAFallback) {
  Error e = thrown_by([] { make_posix_backend(0); });
  EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  e = thrown_by([] { make_uring_backend(0); });
  EXPECT_TRUE(e.code() == ErrorCode::invalid_argument || e.code() == ErrorCode::unavailable) << e.what();
  e = thrown_by([] { make_backend({.kind = BackendKind::posix, .posix_threads = 0}); });
  EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
}

// Docker's default seccomp profile answers io_uring_setup with EPERM. A child process installs
// the same refusal and must get the posix backend with the kernel's reason.
void refuse_io_uring_setup() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    std::cerr << "cannot install a seccomp filter here" << std::endl;
    std::_Exit(3);
  }
}

TEST(MakeBackendDeathTest, FallsBackToPosixWhenSeccompRefusesTheRing) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        refuse_io_uring_setup();
        std::string reason;
        auto backend = make_backend({.kind = BackendKind::io_uring}, &reason);
        std::cerr << backend->name() << " | " << reason << std::endl;
        std::_Exit(backend->name() == "posix" ? 0 : 1);
      },
      ::testing::ExitedWithCode(0),
      "posix \\| io_uring unavailable: (io_uring_queue_init: Operation not permitted|io_uring: quicksave was built without io_uring)");
}

}  // namespace
}  // namespace quicksave::io
