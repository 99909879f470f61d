// The commit protocol's guarantees beyond single crashes: one writer per folder (a lock, not a
// pid), loads that never write (concurrent, read-only mounts), a failed undo that keeps the
// previous checkpoint, ENOSPC mid-switch, hostile protocol files that are refused and never acted
// on, and content checksums that find a flipped bit in any file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "commit/checkpoint_fixture.hpp"
#include "commit/commit.hpp"
#include "commit/fault_file_system.hpp"
#include "commit/journal.hpp"
#include "commit/names.hpp"
#include "commit/recovery.hpp"
#include "engine/sync_writer.hpp"
#include "plan/save_plan.hpp"
#include "quicksave/checkpointer.hpp"
#include "quicksave/error.hpp"
#include "quicksave/log.hpp"
#include "quicksave/save.hpp"
#include "quicksave/verify.hpp"

namespace quicksave {
namespace {

namespace fs = std::filesystem;
using testing::checkpoint_generation;
using testing::has_leftovers;
using testing::read_file;
using testing::SyntheticStateDict;
using testing::TempDir;
using testing::thrown_by;
using testing::write_file;

constexpr int kSaverTensors = 6;  // crash_saver's state dict

SaveOptions sharded(std::int64_t max_bytes) {
  SaveOptions o;
  o.max_shard_size = max_bytes;
  return o;
}

struct Output {
  int exit_code = -1;
  bool signaled = false;
  std::string text;
};

// Runs a command line through /bin/sh, collecting stdout and stderr.
Output shell(const std::string& command) {
  Output out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.text.append(buffer, n);
  const int status = ::pclose(pipe);
  out.signaled = WIFSIGNALED(status);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string saver() { return QUICKSAVE_CRASH_SAVER; }

// Every file under `root` (sizes, contents' first bytes and mtimes): nothing may change it.
std::map<std::string, std::string> snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    std::string what = e.is_regular_file() ? std::to_string(e.file_size()) + ":" + read_file(e.path()).substr(0, 64) : "dir";
    out[fs::relative(e.path(), root).string()] = what + "@" + std::to_string(fs::last_write_time(e.path()).time_since_epoch().count());
  }
  return out;
}

// ---- one writer per folder ------------------------------------------------------------------

TEST(WriterLock, ASecondCheckpointerInTheSameProcessIsBusyAndNamesTheHolder) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  auto file_system = commit::make_posix_file_system();
  commit::Commit held = commit::Commit::begin(*file_system, dir, {.pattern = "model{suffix}.safetensors", .outputs = {"model.safetensors"}});
  const Error e = thrown_by([&] { save_state_dict(SyntheticStateDict(2, 2, 100).tensors, dir); });
  EXPECT_EQ(e.code(), ErrorCode::busy) << e.what();
  const std::string message = e.what();
  EXPECT_NE(message.find("tag=.qs-"), std::string::npos) << message;
  EXPECT_NE(message.find("pid=" + std::to_string(::getpid())), std::string::npos) << message;
  EXPECT_NE(message.find("host="), std::string::npos) << message;
  Checkpointer ckpt(CheckpointerOptions{.pinned_budget_bytes = 1 << 20, .chunk_bytes = 64 * 1024});
  EXPECT_EQ(thrown_by([&] { ckpt.save(SyntheticStateDict(2, 2, 100).tensors, dir); }).code(), ErrorCode::busy);
  held.abort();
  save_state_dict(SyntheticStateDict(3, 2, 100).tensors, dir);  // free again
  EXPECT_EQ(checkpoint_generation(dir, 2), 3);
}

TEST(WriterLock, AnotherProcessIsBusyOrWaitsWhenAsked) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  ASSERT_EQ(shell(saver() + " save " + dir.string() + " 1").exit_code, 0);
  auto file_system = commit::make_posix_file_system();
  auto held = std::make_unique<commit::Commit>(
      commit::Commit::begin(*file_system, dir, {.pattern = "model{suffix}.safetensors", .outputs = {"model.safetensors"}}));
  const Output busy = shell(saver() + " save " + dir.string() + " 2");
  EXPECT_EQ(busy.exit_code, 3) << busy.text;
  EXPECT_NE(busy.text.find("another save holds it"), std::string::npos) << busy.text;
  EXPECT_NE(busy.text.find("pid=" + std::to_string(::getpid())), std::string::npos) << busy.text;
  // --wait-lock: blocks until the holder is done, then saves.
  auto waiting = std::async(std::launch::async, [&] { return shell(saver() + " save " + dir.string() + " 3 --wait-lock"); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  held.reset();
  const Output waited = waiting.get();
  EXPECT_EQ(waited.exit_code, 0) << waited.text;
  EXPECT_EQ(checkpoint_generation(dir, kSaverTensors), 3);
}

TEST(WriterLock, TwoWritersRacingNeverMixAndNeverBothReportSuccessWrongly) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "model";
  ASSERT_EQ(shell(saver() + " save " + dir.string() + " 1 --sharded 3").exit_code, 0);
  write_file(dir / "config.json", "{}");
  for (int round = 0; round < 15; ++round) {
    const int a = 10 + 2 * round, b = a + 1;
    auto first = std::async(std::launch::async, [&] { return shell(saver() + " save " + dir.string() + " " + std::to_string(a) + " --sharded 3"); });
    auto second = std::async(std::launch::async, [&] { return shell(saver() + " save " + dir.string() + " " + std::to_string(b) + " --sharded 2"); });
    const Output x = first.get(), y = second.get();
    ASSERT_TRUE((x.exit_code == 0 || x.exit_code == 3) && (y.exit_code == 0 || y.exit_code == 3)) << x.text << y.text;
    ASSERT_TRUE(x.exit_code == 0 || y.exit_code == 0) << "neither saved: " << x.text << y.text;
    const auto generation = checkpoint_generation(dir, kSaverTensors);
    ASSERT_TRUE(generation.has_value());
    // The folder holds the save that succeeded last; one that said "busy" wrote nothing.
    if (x.exit_code != 0) EXPECT_EQ(*generation, b);
    if (y.exit_code != 0) EXPECT_EQ(*generation, a);
    EXPECT_FALSE(has_leftovers(dir));
    EXPECT_TRUE(verify_checksums(dir).ok());
  }
}

TEST(WriterLock, OneCheckpointerRunsTwoSavesIntoOneFolderOneAfterTheOther) {
  TempDir tmp;
  CheckpointerOptions options;
  options.max_in_flight_saves = 2;
  options.chunk_bytes = 64 * 1024;
  options.pinned_budget_bytes = 8 * 64 * 1024;
  Checkpointer ckpt(options);
  SyntheticStateDict a(1, 4, 50000), b(2, 4, 50000);
  SaveHandle first = ckpt.save_async(a.tensors, tmp.path() / "c");
  SaveHandle second = ckpt.save_async(b.tensors, tmp.path() / "c");
  first.committed().get();
  second.committed().get();
  EXPECT_EQ(checkpoint_generation(tmp.path() / "c", 4), 2);
}

// ---- liveness by lock, not pid ----------------------------------------------------------------

TEST(SamePid, ACrashedSaveWithTheRecoverersPidIsRecovered) {
  if (shell("unshare --pid --fork --mount-proc true").exit_code != 0) GTEST_SKIP() << "no pid namespaces here";
  TempDir tmp;
  const fs::path dir = tmp.path() / "model";
  ASSERT_EQ(shell(saver() + " save " + dir.string() + " 1 --sharded 3").exit_code, 0);
  write_file(dir / "config.json", "{}");
  // Pid 1 of a new namespace, crashed inside the switch (its 30th operation).
  const Output crashed = shell("unshare --pid --fork --mount-proc " + saver() + " save " + dir.string() + " 2 --sharded 2 --crash-at 30");
  ASSERT_NE(crashed.exit_code, 0) << crashed.text;
  ASSERT_TRUE(has_leftovers(dir));
  // Another pid 1 (the same pid as the crashed save) saves into the folder: it must recover.
  const Output next = shell("unshare --pid --fork --mount-proc " + saver() + " save " + dir.string() + " 3 --sharded 2");
  EXPECT_EQ(next.exit_code, 0) << next.text;
  EXPECT_EQ(checkpoint_generation(dir, kSaverTensors), 3);
  EXPECT_FALSE(has_leftovers(dir));
  // And a recovering process with that pid too.
  ASSERT_NE(shell("unshare --pid --fork --mount-proc " + saver() + " save " + dir.string() + " 4 --crash-at 25").exit_code, 0);
  const Output recovered = shell("unshare --pid --fork --mount-proc " + saver() + " recover " + dir.string());
  EXPECT_EQ(recovered.exit_code, 0) << recovered.text;
  EXPECT_NE(recovered.text.find("rolled"), std::string::npos) << recovered.text;
  EXPECT_FALSE(has_leftovers(dir));
  const auto generation = checkpoint_generation(dir, kSaverTensors);
  EXPECT_TRUE(generation == 3 || generation == 4);
}

TEST(SamePid, TwoSavesWithTheSamePidExcludeEachOther) {
  if (shell("unshare --pid --fork --mount-proc true").exit_code != 0) GTEST_SKIP() << "no pid namespaces here";
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  ASSERT_EQ(shell(saver() + " save " + dir.string() + " 1").exit_code, 0);
  FILE* holder = ::popen(("unshare --pid --fork --mount-proc " + saver() + " hold " + dir.string() + " 3").c_str(), "r");
  char line[64] = {};
  ASSERT_NE(std::fgets(line, sizeof line, holder), nullptr);
  EXPECT_EQ(std::string(line), "holding\n");
  const Output second = shell("unshare --pid --fork --mount-proc " + saver() + " save " + dir.string() + " 2");
  EXPECT_EQ(second.exit_code, 3) << second.text;
  EXPECT_NE(second.text.find("pid=1 "), std::string::npos) << second.text;  // the holder is pid 1 of its namespace
  // While a save holds the folder, recovery touches nothing.
  const Output recover = shell(saver() + " recover " + dir.string());
  EXPECT_NE(recover.text.find("left alone: everything: a save holds"), std::string::npos) << recover.text;
  ::pclose(holder);
  EXPECT_EQ(checkpoint_generation(dir, kSaverTensors), 1);
}

// ---- loads never write ------------------------------------------------------------------------

// A model folder whose in-place switch to generation 2 crashed at operation `crash_at`.
fs::path crashed_model_folder(const TempDir& tmp, int crash_at) {
  const fs::path dir = tmp.path() / "model";
  EXPECT_EQ(shell(saver() + " save " + dir.string() + " 1 --sharded 3").exit_code, 0);
  write_file(dir / "config.json", "{}");
  EXPECT_NE(shell(saver() + " save " + dir.string() + " 2 --sharded 2 --crash-at " + std::to_string(crash_at)).exit_code, 0);
  return dir;
}

TEST(ReadOnlyLoads, FourProcessesLoadACrashedFolderAtOnceWithoutChangingIt) {
  for (const int crash_at : {26, 30, 34, 38}) {
    SCOPED_TRACE(crash_at);
    TempDir tmp;
    const fs::path dir = crashed_model_folder(tmp, crash_at);
    ASSERT_TRUE(has_leftovers(dir));
    const auto before = snapshot(tmp.path());
    std::vector<std::future<Output>> loads;
    for (int i = 0; i < 4; ++i) loads.push_back(std::async(std::launch::async, [&] { return shell(saver() + " load " + dir.string()); }));
    std::string first;
    for (auto& l : loads) {
      const Output out = l.get();
      EXPECT_EQ(out.exit_code, 0) << out.text;
      EXPECT_TRUE(out.text == "generation 1\n" || out.text == "generation 2\n") << out.text;
      if (first.empty()) first = out.text;
      EXPECT_EQ(out.text, first);
    }
    EXPECT_EQ(snapshot(tmp.path()), before) << "a load wrote";
    // Recovery then leaves exactly what the loads read.
    recover_checkpoint(dir);
    EXPECT_EQ("generation " + std::to_string(checkpoint_generation(dir, kSaverTensors).value_or(-1)) + "\n", first);
  }
}

TEST(ReadOnlyLoads, ACrashedFolderOnAReadOnlyMountLoads) {
  TempDir tmp;
  const fs::path dir = crashed_model_folder(tmp, 30);
  const fs::path mount_point = tmp.path() / "ro";
  fs::create_directories(mount_point);
  if (::mount(dir.c_str(), mount_point.c_str(), nullptr, MS_BIND, nullptr) != 0) GTEST_SKIP() << "bind mounts need root";
  ASSERT_EQ(::mount(nullptr, mount_point.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr), 0);
  const Output out = shell(saver() + " load " + mount_point.string());
  const Output write_attempt = shell("touch " + (mount_point / "x").string());
  ::umount(mount_point.c_str());
  EXPECT_EQ(out.exit_code, 0) << out.text;
  EXPECT_TRUE(out.text == "generation 1\n" || out.text == "generation 2\n") << out.text;
  EXPECT_NE(write_attempt.exit_code, 0) << "the mount was not read-only";
}

// ---- failures inside the commit ------------------------------------------------------------------

// Exchange mode: the directory sync after the swap fails, and so does the swap back. The staging
// directory then holds the previous checkpoint: it must be kept, never removed.
class UndoFails : public commit::FileSystem {
 public:
  explicit UndoFails(std::unique_ptr<commit::FileSystem> inner) : inner_(std::move(inner)) {}
  void exchange(const fs::path& a, const fs::path& b) override {
    if (++exchanges_ == 2) throw io_error("renameat2", EIO, "injected undo failure");
    inner_->exchange(a, b);
  }
  void sync_directory(const fs::path& path) override {
    if (exchanges_ == 1 && !failed_sync_) {
      failed_sync_ = true;
      throw io_error("fsync", EIO, "injected, dir=" + path.string());
    }
    inner_->sync_directory(path);
  }
  void rename(const fs::path& a, const fs::path& b) override { inner_->rename(a, b); }
  void hard_link(const fs::path& a, const fs::path& b) override { inner_->hard_link(a, b); }
  void remove(const fs::path& p) override { inner_->remove(p); }
  void remove_all(const fs::path& p) override { inner_->remove_all(p); }
  void make_directory(const fs::path& p) override { inner_->make_directory(p); }
  void make_directories(const fs::path& p) override { inner_->make_directories(p); }
  void write_file_durably(const fs::path& p, std::string_view c) override { inner_->write_file_durably(p, c); }
  std::string read_small_file(const fs::path& p, std::size_t n) override { return inner_->read_small_file(p, n); }
  std::vector<commit::DirEntry> list(const fs::path& d) override { return inner_->list(d); }
  commit::EntryType type_of(const fs::path& p) override { return inner_->type_of(p); }
  std::uint64_t file_id(const fs::path& p) override { return inner_->file_id(p); }
  commit::FileLock lock(const fs::path& p, std::string_view h, bool w) override { return inner_->lock(p, h, w); }
  std::optional<std::string> lock_holder(const fs::path& p) override { return inner_->lock_holder(p); }

 private:
  std::unique_ptr<commit::FileSystem> inner_;
  int exchanges_ = 0;
  bool failed_sync_ = false;
};

TEST(CommitFailures, AFailedUndoNeverDeletesThePreviousCheckpoint) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  save_state_dict(SyntheticStateDict(1, 4, 1000).tensors, dir);
  UndoFails file_system(commit::make_posix_file_system());
  auto io = io::make_posix_backend(1);
  const auto plan = plan::make_save_plan(SyntheticStateDict(2, 4, 1000).tensors, SaveOptions{});
  const Error e = thrown_by([&] { engine::write_plan_sync(plan, dir, SaveOptions{}, *io, file_system); });
  EXPECT_NE(std::string(e.what()).find("could not be undone"), std::string::npos) << e.what();
  // Some folder still holds generation 1: the staging directory the error names.
  bool previous_kept = false;
  for (const auto& entry : fs::directory_iterator(tmp.path())) {
    if (entry.is_directory() && entry.path() != dir && fs::exists(entry.path() / "model.safetensors")) {
      previous_kept = previous_kept || checkpoint_generation(entry.path(), 4) == 1;
      EXPECT_NE(std::string(e.what()).find(entry.path().filename().string()), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(previous_kept);
  EXPECT_EQ(checkpoint_generation(dir, 4), 2);  // the target holds the complete new one
}

TEST(CommitFailures, EnospcInTheMiddleOfAnInPlaceOverwriteKeepsTheOldCheckpointByteForByte) {
  TempDir tmp;
  const fs::path mount_point = tmp.path() / "small";
  fs::create_directories(mount_point);
  // 1.6 MB: room for the first save (1.2 MB with config) but not for a second copy beside it.
  if (::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=1600k") != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  const fs::path dir = mount_point / "model";
  save_state_dict(SyntheticStateDict(1, 6, 50000).tensors, dir, sharded(450000));
  write_file(dir / "config.json", "{}");
  const auto before = snapshot(dir);
  std::map<std::string, std::string> contents;
  for (const auto& e : fs::directory_iterator(dir)) contents[e.path().filename().string()] = read_file(e.path());
  const Error e = thrown_by([&] { save_state_dict(SyntheticStateDict(2, 6, 50000).tensors, dir, sharded(450000)); });
  EXPECT_EQ(e.errno_value(), ENOSPC) << e.what();
  std::map<std::string, std::string> after;
  for (const auto& entry : fs::directory_iterator(dir)) after[entry.path().filename().string()] = read_file(entry.path());
  ::umount(mount_point.c_str());
  EXPECT_EQ(after, contents);  // the same names, byte for byte, nothing left over
}

// ---- hostile protocol files ---------------------------------------------------------------------

struct Planted {
  std::string name;
  std::string text;
};

TEST(HostileJournals, AreRefusedAndNothingOutsideOrInsideIsTouched) {
  const std::string tag = ".qs-0123456789abcdef";
  const auto journal = [&](const std::string& body, const std::string& pattern = "model{suffix}.safetensors") {
    return "quicksave-journal 2\ntag\t" + tag + "\npattern\t" + pattern + "\nwriter\tx\n" + body;
  };
  TempDir tmp;
  const fs::path victim_dir = tmp.path() / "outside";
  fs::create_directories(victim_dir);
  write_file(victim_dir / "victim", "precious");
  const std::vector<std::string> hostile = {
      journal("rename\t" + (victim_dir / "victim").string() + "\t0\t1\nend\t1\n"),
      journal("rename\t../outside/victim\t0\t1\nend\t1\n"),
      journal("remove\t../outside/victim\t1\nend\t1\n"),
      journal("remove\tconfig.json\t1\nend\t1\n"),                          // not a file of the pattern
      journal("remove\tconfig.json\t1\nend\t1\n", "config.json"),           // a pattern chosen to name it: inode guard
      journal("rename\tmodel.safetensors\t0\t1\nend\t1\n"),                 // inode guard: not the file it names
      journal("rename\t.qs-0123456789abcdef.journal\t0\t1\nend\t1\n"),     // a protocol name
      journal("rename\tmodel.safetensors\t0\t1\n"),                          // no end line
      journal("rename\tmodel.safetensors\t0\t1\nend\t5\n"),                 // wrong count
      journal("rename\tmodel.safetensors\t0\tx\nend\t1\n"),                 // bad inode
      journal("rename\tmodel%2f..%2fx\t0\t1\nend\t1\n"),                    // encoded: just an odd name, not of the pattern
      "quicksave-journal 2\ntag\t.qs-ffffffffffffffff\npattern\tmodel{suffix}.safetensors\nwriter\tx\nend\t0\n",
      "garbage",
  };
  for (std::size_t i = 0; i < hostile.size(); ++i) {
    SCOPED_TRACE(i);
    const fs::path dir = tmp.path() / ("model" + std::to_string(i));
    save_state_dict(SyntheticStateDict(1, 2, 100).tensors, dir);
    write_file(dir / "config.json", "{}");
    write_file(dir / (tag + ".journal"), hostile[i]);
    write_file(dir / (tag + ".committed"), commit::encode_commit_mark(hostile[i]));  // even "committed"
    write_file(dir / (tag + ".old.model.safetensors"), "attacker's bytes");
    const auto before_outside = snapshot(victim_dir);
    const auto before = snapshot(dir);
    // A load reads the checkpoint as it is and changes nothing.
    EXPECT_EQ(checkpoint_generation(dir, 2, /*as_loaded=*/true), 1);
    EXPECT_EQ(snapshot(dir), before);
    // Recovery (and a save, which runs it) never acts on the journal.
    const auto actions = recover_checkpoint(dir);
    EXPECT_EQ(snapshot(victim_dir), before_outside);
    EXPECT_TRUE(fs::exists(dir / "config.json"));
    EXPECT_EQ(read_file(dir / "config.json"), "{}");
    EXPECT_EQ(checkpoint_generation(dir, 2), 1);
    save_state_dict(SyntheticStateDict(2, 2, 100).tensors, dir);
    EXPECT_EQ(checkpoint_generation(dir, 2), 2);
    EXPECT_EQ(read_file(victim_dir / "victim"), "precious");
    EXPECT_EQ(read_file(dir / "config.json"), "{}");
  }
}

TEST(JournalFormat, RoundTripsAndRefusesBrokenRules) {
  commit::Journal j{.tag = ".qs-00000000000000aa", .pattern = "model{suffix}.safetensors", .writer = "host=h boot=b pid=1"};
  j.entries = {{"model-00001-of-00002.safetensors", true, 11}, {"model.safetensors.index.json", false, 12}};
  j.stale = {{"model.safetensors", 13}};
  const std::string text = commit::encode_journal(j);
  const commit::Journal back = commit::decode_journal(text, j.tag);
  EXPECT_EQ(back.entries.size(), 2u);
  EXPECT_EQ(back.entries[0].final_name, "model-00001-of-00002.safetensors");
  EXPECT_TRUE(back.entries[0].had_previous);
  EXPECT_EQ(back.entries[1].inode, 12u);
  EXPECT_EQ(back.stale[0].name, "model.safetensors");
  EXPECT_TRUE(commit::commit_mark_matches(commit::encode_commit_mark(text), text));
  EXPECT_FALSE(commit::commit_mark_matches(commit::encode_commit_mark(text), text + " "));
  // Every prefix of a journal (a torn write) is refused.
  for (std::size_t n = 0; n < text.size(); ++n) {
    EXPECT_EQ(thrown_by([&] { commit::decode_journal(text.substr(0, n), j.tag); }).code(), ErrorCode::corrupt) << n;
  }
  EXPECT_EQ(thrown_by([&] { commit::decode_journal(text, ".qs-00000000000000ab"); }).code(), ErrorCode::corrupt);
  // Only the form encode_journal writes: an inode with a leading zero or sign is refused (found by
  // protocol_fuzz, whose round-trip check requires one text per journal).
  for (const char* inode : {"012", "+12", "0", " 12", "12 "}) {
    std::string other = text;
    other.replace(other.find("\t12\n"), 4, std::string("\t") + inode + "\n");
    EXPECT_EQ(thrown_by([&] { commit::decode_journal(other, j.tag); }).code(), ErrorCode::corrupt) << inode;
  }
}

// ---- content checksums ------------------------------------------------------------------------

TEST(Checksums, AFlippedBitInAnyFileIsFoundByVerifyAndNamed) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  const SaveResult saved = save_state_dict(SyntheticStateDict(1, 6, 30000).tensors, dir, sharded(250000));
  ASSERT_EQ(saved.manifest, "model.safetensors.quicksave-manifest.json");
  const ChecksumReport clean = verify_checksums(dir);
  ASSERT_TRUE(clean.manifest_found);
  EXPECT_TRUE(clean.ok());
  EXPECT_EQ(clean.tensors_checked, 6u);
  std::vector<std::string> files = saved.files;
  files.push_back(saved.manifest);  // a damaged manifest is found too
  for (const auto& name : files) {
    const std::uint64_t size = fs::file_size(dir / name);
    for (const std::uint64_t offset : {std::uint64_t{3}, size / 2, size - 1}) {
      SCOPED_TRACE(name + " @" + std::to_string(offset));
      std::fstream f(dir / name, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(offset));
      char c = 0;
      f.read(&c, 1);
      c ^= 0x10;
      f.seekp(static_cast<std::streamoff>(offset));
      f.write(&c, 1);
      f.close();
      const ChecksumReport report = verify_checksums(dir);
      ASSERT_GE(report.mismatches.size(), 1u);
      const ChecksumMismatch& m = report.mismatches[0];
      if (name == saved.manifest) {
        EXPECT_FALSE(report.ok());  // unreadable, or describing other bytes than the files hold
      } else {
        EXPECT_EQ(report.mismatches.size(), 1u);
        EXPECT_EQ(m.file, name);
        EXPECT_NE(m.what.find(name), std::string::npos);
      }
      if (!m.tensor.empty() && name != saved.manifest) {
        EXPECT_LE(m.begin, offset);
        EXPECT_LT(offset, m.end);
        EXPECT_NE(m.what.find(m.tensor), std::string::npos);
      }
      c ^= 0x10;  // put it back
      std::fstream g(dir / name, std::ios::in | std::ios::out | std::ios::binary);
      g.seekp(static_cast<std::streamoff>(offset));
      g.write(&c, 1);
    }
  }
  EXPECT_TRUE(verify_checksums(dir).ok());
}

TEST(Checksums, AsyncSavesPublishTheSameHashesAndFoldersWithoutAManifestStillVerify) {
  TempDir tmp;
  SyntheticStateDict sd(4, 5, 70000);
  CheckpointerOptions options;
  options.chunk_bytes = 64 * 1024;
  options.pinned_budget_bytes = 4 * 64 * 1024;
  Checkpointer ckpt(options);
  const SaveResult result = ckpt.save(sd.tensors, tmp.path() / "async", sharded(600000));
  EXPECT_FALSE(result.manifest.empty());
  const ChecksumReport report = verify_checksums(tmp.path() / "async");
  EXPECT_TRUE(report.manifest_found && report.ok());
  EXPECT_EQ(report.tensors_checked, 5u);
  SaveOptions no_checksums;
  no_checksums.checksums = false;
  save_state_dict(sd.tensors, tmp.path() / "plain", no_checksums);
  EXPECT_FALSE(fs::exists(tmp.path() / "plain" / "model.safetensors.quicksave-manifest.json"));
  const ChecksumReport none = verify_checksums(tmp.path() / "plain");
  EXPECT_FALSE(none.manifest_found);
  EXPECT_TRUE(none.ok());
}

// ---- what the library logs ---------------------------------------------------------------------

namespace log_test {

struct Captured {
  std::mutex mutex;
  std::vector<std::pair<LogLevel, std::string>> lines;
  std::promise<void> waiting;  // set on the "waiting for the save that holds" line
  bool waiting_set = false;
};

// Installs a capturing handler for one test and restores the defaults afterwards.
struct CaptureLog {
  explicit CaptureLog(LogLevel level) : captured(std::make_shared<Captured>()) {
    set_log_level(level);
    set_log_handler([c = captured](LogLevel level, std::string_view message) {
      std::lock_guard lock(c->mutex);
      c->lines.emplace_back(level, std::string(message));
      if (!c->waiting_set && message.find("waiting for the save that holds") != std::string_view::npos) {
        c->waiting_set = true;
        c->waiting.set_value();
      }
    });
  }
  ~CaptureLog() {
    set_log_handler(nullptr);
    set_log_level(LogLevel::warning);
  }
  std::vector<std::pair<LogLevel, std::string>> lines() {
    std::lock_guard lock(captured->mutex);
    return captured->lines;
  }
  std::shared_ptr<Captured> captured;
};

bool has_line(const std::vector<std::pair<LogLevel, std::string>>& lines, LogLevel level, const std::string& text) {
  for (const auto& [l, m] : lines) {
    if (l == level && m.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace log_test

TEST(Log, ASaveWaitingForTheLockSaysSoThenSummarisesTheSave) {
  log_test::CaptureLog log(LogLevel::info);
  TempDir tmp;
  const fs::path dir = tmp.path() / "ckpt";
  auto file_system = commit::make_posix_file_system();
  std::optional<commit::Commit> held;
  held.emplace(commit::Commit::begin(*file_system, dir, {.pattern = "model{suffix}.safetensors", .outputs = {"model.safetensors"}}));
  std::future<void> waiting = log.captured->waiting.get_future();
  std::thread saver([&] {
    SaveOptions options;
    options.wait_for_lock = true;
    save_state_dict(SyntheticStateDict(4, 2, 100).tensors, dir, options);
  });
  // The save says it waits before it blocks: no timing involved.
  waiting.wait();
  held->abort();
  saver.join();
  const auto lines = log.lines();
  EXPECT_TRUE(log_test::has_line(lines, LogLevel::info, "waiting for the save that holds " + dir.string()));
  EXPECT_TRUE(log_test::has_line(lines, LogLevel::info, "pid=" + std::to_string(::getpid())));
  EXPECT_EQ(checkpoint_generation(dir, 2), 4);

  // The engine's save reports its summary at info.
  Checkpointer ckpt(CheckpointerOptions{.pinned_budget_bytes = 1 << 20, .chunk_bytes = 64 * 1024});
  ckpt.save(SyntheticStateDict(5, 2, 100).tensors, dir);
  EXPECT_TRUE(log_test::has_line(log.lines(), LogLevel::info, "saved " + dir.string() + " ("));
}

TEST(Log, LevelsFilterAndTheDefaultHandlerComesBack) {
  {
    log_test::CaptureLog log(LogLevel::warning);
    TempDir tmp;
    Checkpointer ckpt(CheckpointerOptions{.pinned_budget_bytes = 1 << 20, .chunk_bytes = 64 * 1024});
    ckpt.save(SyntheticStateDict(1, 2, 100).tensors, tmp.path() / "ckpt");
    EXPECT_TRUE(log.lines().empty()) << log.lines().front().second;  // the summary is info: below the level
    EXPECT_EQ(log_level(), LogLevel::warning);
  }
  // A handler that throws never fails a save.
  set_log_level(LogLevel::debug);
  set_log_handler([](LogLevel, std::string_view) { throw std::runtime_error("handler failure"); });
  TempDir tmp;
  Checkpointer ckpt(CheckpointerOptions{.pinned_budget_bytes = 1 << 20, .chunk_bytes = 64 * 1024});
  EXPECT_NO_THROW(ckpt.save(SyntheticStateDict(1, 2, 100).tensors, tmp.path() / "ckpt"));
  set_log_handler(nullptr);
  set_log_level(LogLevel::warning);
  EXPECT_STREQ(to_string(LogLevel::error), "error");
}

}  // namespace
}  // namespace quicksave
