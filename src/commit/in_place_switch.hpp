// The two ways an in-place switch ends (commit.cpp, protocol B), shared by the save that made
// the switch and by recovery. Both are idempotent: killed at any step, running them again from
// the same journal finishes the job.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "commit/file_system.hpp"
#include "commit/journal.hpp"

namespace quicksave::commit {

// Before the commit mark: restores every previous file from its backup, removes new files that
// had no predecessor and every temporary, then the journal (last: it is what says how to undo).
void roll_back(FileSystem& fs, const fs::path& target, const Journal& journal);

// After the commit mark (step 7): removes backups and stale files, then the journal, then the
// mark (in that order: a journal without its mark would be rolled back). Best effort: failures
// go to `warnings` and a later recovery finishes.
void roll_forward(FileSystem& fs, const fs::path& target, const Journal& journal, std::vector<std::string>* removed,
                  std::vector<std::string>* warnings);

}  // namespace quicksave::commit
