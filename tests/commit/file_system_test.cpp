// The commit protocol's file-system seam (PosixFileSystem): each call does exactly what it says and
// fails with the call, errno and paths in its message; reads of protocol files refuse anything but
// small regular files; locks exclude every other open file description, in this process or another.
#include "commit/file_system.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <map>
#include <string>

#include "quicksave/error.hpp"
#include "test_support.hpp"

namespace quicksave::commit {
namespace {

using quicksave::testing::read_file;
using quicksave::testing::TempDir;
using quicksave::testing::thrown_by;
using quicksave::testing::write_file;

mode_t current_umask() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

class FileSystemTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::unique_ptr<FileSystem> fs_ = make_posix_file_system();
};

TEST_F(FileSystemTest, RenameMovesAndReportsErrors) {
  write_file(dir_ / "from", "payload");
  fs_->rename(dir_ / "from", dir_ / "to");
  EXPECT_FALSE(fs::exists(dir_ / "from"));
  EXPECT_EQ(read_file(dir_ / "to"), "payload");

  // Over an existing file: replaced atomically.
  write_file(dir_ / "newer", "newer");
  fs_->rename(dir_ / "newer", dir_ / "to");
  EXPECT_EQ(read_file(dir_ / "to"), "newer");

  const Error e = thrown_by([&] { fs_->rename(dir_ / "absent", dir_ / "x"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_EQ(std::string(e.what()), "rename: No such file or directory (from=" + (dir_ / "absent").string() +
                                       ", to=" + (dir_ / "x").string() + ")");
}

TEST_F(FileSystemTest, ExchangeSwapsOrSaysUnavailable) {
  fs_->make_directory(dir_ / "a");
  fs_->make_directory(dir_ / "b");
  write_file(dir_ / "a" / "model.safetensors", "old");
  write_file(dir_ / "b" / "model.safetensors", "new");
  try {
    fs_->exchange(dir_ / "a", dir_ / "b");
  } catch (const Error& e) {
    ASSERT_EQ(e.code(), ErrorCode::unavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("renameat2"), std::string::npos) << e.what();
    GTEST_SKIP() << "RENAME_EXCHANGE unavailable here: " << e.what();
  }
  EXPECT_EQ(read_file(dir_ / "a" / "model.safetensors"), "new");
  EXPECT_EQ(read_file(dir_ / "b" / "model.safetensors"), "old");

  // Files swap too.
  write_file(dir_ / "x", "x");
  write_file(dir_ / "y", "y");
  fs_->exchange(dir_ / "x", dir_ / "y");
  EXPECT_EQ(read_file(dir_ / "x"), "y");
  EXPECT_EQ(read_file(dir_ / "y"), "x");

  // Both must exist.
  const Error e = thrown_by([&] { fs_->exchange(dir_ / "x", dir_ / "absent"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_EQ(std::string(e.what()), "renameat2: No such file or directory (a=" + (dir_ / "x").string() +
                                       ", b=" + (dir_ / "absent").string() + ")");
  EXPECT_EQ(read_file(dir_ / "x"), "y");
}

TEST_F(FileSystemTest, RemoveUnlinksOneFile) {
  write_file(dir_ / "f", "x");
  fs_->remove(dir_ / "f");
  EXPECT_FALSE(fs::exists(dir_ / "f"));

  Error e = thrown_by([&] { fs_->remove(dir_ / "f"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_EQ(std::string(e.what()), "unlink: No such file or directory (file=" + (dir_ / "f").string() + ")");

  // A directory is not a file.
  fs::create_directory(dir_ / "d");
  e = thrown_by([&] { fs_->remove(dir_ / "d"); });
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), EISDIR);
  EXPECT_TRUE(fs::exists(dir_ / "d"));
}

TEST_F(FileSystemTest, RemoveAllDeletesATree) {
  fs::create_directories(dir_ / "tree" / "a" / "b");
  write_file(dir_ / "tree" / "top", "1");
  write_file(dir_ / "tree" / "a" / "b" / "deep", "2");
  write_file(dir_ / "keep", "3");
  fs_->remove_all(dir_ / "tree");
  EXPECT_FALSE(fs::exists(dir_ / "tree"));
  EXPECT_EQ(read_file(dir_ / "keep"), "3");
  // Nothing there is nothing to do, as with std::filesystem::remove_all.
  fs_->remove_all(dir_ / "tree");
}

TEST_F(FileSystemTest, MakeDirectoryMakesOneLevel) {
  fs_->make_directory(dir_ / "new");
  EXPECT_TRUE(fs::is_directory(dir_ / "new"));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u & ~current_umask());

  Error e = thrown_by([&] { fs_->make_directory(dir_ / "new"); });
  EXPECT_EQ(e.code(), ErrorCode::already_exists);
  EXPECT_EQ(e.errno_value(), EEXIST);
  EXPECT_EQ(std::string(e.what()), "mkdir: File exists (dir=" + (dir_ / "new").string() + ")");

  e = thrown_by([&] { fs_->make_directory(dir_ / "missing" / "child"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_FALSE(fs::exists(dir_ / "missing"));
}

TEST_F(FileSystemTest, SyncDirectory) {
  fs_->sync_directory(dir_.path());

  Error e = thrown_by([&] { fs_->sync_directory(dir_ / "missing"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(e.errno_value(), ENOENT);
  EXPECT_EQ(std::string(e.what()), "open: No such file or directory (dir=" + (dir_ / "missing").string() + ")");

  write_file(dir_ / "file", "x");
  e = thrown_by([&] { fs_->sync_directory(dir_ / "file"); });
  EXPECT_EQ(e.code(), ErrorCode::io);
  EXPECT_EQ(e.errno_value(), ENOTDIR);
}

TEST_F(FileSystemTest, WriteFileDurablyWritesANewFileExactly) {
  const fs::path path = dir_ / "model.safetensors.index.json";
  fs_->write_file_durably(path, std::string(10000, 'a'));
  EXPECT_EQ(read_file(path), std::string(10000, 'a'));
  // Protocol files are written once, never rewritten: an existing file is refused as it is.
  Error e = thrown_by([&] { fs_->write_file_durably(path, "{}"); });
  EXPECT_EQ(e.code(), ErrorCode::already_exists);
  EXPECT_EQ(read_file(path), std::string(10000, 'a'));
  const std::string binary("a\0b\0c", 5);
  fs_->write_file_durably(dir_ / "binary", binary);
  EXPECT_EQ(read_file(dir_ / "binary"), binary);
  fs_->write_file_durably(dir_ / "empty", "");
  EXPECT_EQ(fs::file_size(dir_ / "empty"), 0u);

  const fs::path missing = dir_ / "missing" / "x.json";
  e = thrown_by([&] { fs_->write_file_durably(missing, "x"); });
  EXPECT_EQ(e.code(), ErrorCode::not_found);
  EXPECT_EQ(std::string(e.what()), "open: No such file or directory (file=" + missing.string() + ")");
}

TEST_F(FileSystemTest, ReadSmallFileRefusesWhatIsNotASmallRegularFile) {
  write_file(dir_ / "journal", "quicksave-journal 2\n");
  EXPECT_EQ(fs_->read_small_file(dir_ / "journal", 100), "quicksave-journal 2\n");
  EXPECT_EQ(thrown_by([&] { fs_->read_small_file(dir_ / "journal", 5); }).code(), ErrorCode::corrupt);
  fs::create_symlink(dir_ / "journal", dir_ / "link");
  EXPECT_EQ(thrown_by([&] { fs_->read_small_file(dir_ / "link", 100); }).code(), ErrorCode::corrupt);
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0644), 0);
  EXPECT_EQ(thrown_by([&] { fs_->read_small_file(dir_ / "fifo", 100); }).code(), ErrorCode::corrupt);  // never blocks
  EXPECT_EQ(thrown_by([&] { fs_->read_small_file("/dev/zero", 100); }).code(), ErrorCode::corrupt);
}

TEST_F(FileSystemTest, ListAndTypes) {
  write_file(dir_ / "f", "x");
  fs::create_directory(dir_ / "d");
  fs::create_symlink(dir_ / "f", dir_ / "l");
  std::map<std::string, EntryType> seen;
  for (const auto& e : fs_->list(dir_.path())) seen[e.name] = e.type;
  EXPECT_EQ(seen, (std::map<std::string, EntryType>{{"f", EntryType::file}, {"d", EntryType::directory}, {"l", EntryType::other}}));
  EXPECT_TRUE(fs_->list(dir_ / "missing").empty());
  EXPECT_EQ(fs_->type_of(dir_ / "missing"), EntryType::none);
  EXPECT_EQ(fs_->type_of(dir_ / "l"), EntryType::other);
  EXPECT_NE(fs_->file_id(dir_ / "f"), 0u);
  EXPECT_EQ(fs_->file_id(dir_ / "missing"), 0u);
}

TEST_F(FileSystemTest, LockExcludesOtherOpensInThisProcessAndOthers) {
  const fs::path lock_path = dir_ / ".ckpt.quicksave-lock";
  EXPECT_FALSE(fs_->lock_holder(lock_path).has_value());  // no file yet: nobody ever wrote here
  FileLock held = fs_->lock(lock_path, "tag=.qs-1 me", false);
  ASSERT_TRUE(held.held());
  EXPECT_EQ(fs_->lock_holder(lock_path).value_or(""), "tag=.qs-1 me");
  // A second open file description in the same process is another holder: refused.
  EXPECT_FALSE(fs_->lock(lock_path, "second", false).held());
  // Another process too.
  const pid_t child = ::fork();
  if (child == 0) {
    auto fs = make_posix_file_system();
    ::_exit(fs->lock(lock_path, "child", false).held() ? 1 : 0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  held.release();
  EXPECT_FALSE(fs_->lock_holder(lock_path).has_value());
  EXPECT_TRUE(fs_->lock(lock_path, "third", false).held());
}

TEST_F(FileSystemTest, ADeadHoldersLockIsFree) {
  const fs::path lock_path = dir_ / ".ckpt.quicksave-lock";
  const pid_t child = ::fork();
  if (child == 0) {
    auto fs = make_posix_file_system();
    FileLock lock = fs->lock(lock_path, "child", false);
    ::kill(::getpid(), SIGKILL);  // dies holding it
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs_->lock(lock_path, "after", false).held());
}

}  // namespace
}  // namespace quicksave::commit
