// Synchronous Hugging Face style safetensors save of framework-agnostic tensors (TensorRef), the
// byte-for-byte reference that the asynchronous Checkpointer matches. The torch API
// (save_torch_state_dict) is a thin adapter over this.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "quicksave/save_options.hpp"
#include "quicksave/tensor_ref.hpp"

namespace quicksave {

// How a save made its files visible (the commit protocol, src/commit/commit.cpp).
enum class CommitMode {
  fresh,     // the folder did not exist: a staging folder was renamed into place
  exchange,  // the folder held only this pattern's files: swapped atomically with the staging folder
  in_place,  // the folder holds other files too: files switched over under a journal
};
// "fresh", "exchange", "in_place".
const char* to_string(CommitMode mode);

struct SaveResult {
  std::vector<std::string> files;          // written: the shards in order, then the index
  std::uint64_t bytes_written = 0;         // sum of the files' sizes
  CommitMode commit_mode = CommitMode::fresh;
  std::vector<std::string> removed_stale;  // files of the pattern that the new checkpoint replaced
  std::string backend;                     // the I/O backend that wrote the bytes
  std::string manifest;                    // the checksum manifest published beside them ("" when none)
};

// Writes `tensors` (host memory) into `directory` (created if missing) as safetensors shards plus
// `model.safetensors.index.json` when sharded, then publishes them atomically. The previous
// checkpoint in `directory` stays loadable until the new one is durable.
SaveResult save_state_dict(std::vector<TensorRef> tensors, const std::filesystem::path& directory,
                           const SaveOptions& options = {});

// Completes or rolls back a save that a crash interrupted in `directory`; returns one line per
// action (empty when there was nothing to do); what it could not touch (a save holds the folder,
// a corrupt journal) comes as "left alone: ..." lines. Saves run it too; loads never write.
std::vector<std::string> recover_checkpoint(const std::filesystem::path& directory);

// How loads read a folder that an interrupted save left leftovers in, without changing it: the
// complete checkpoint its journal describes. Read `redirected[name]` (a file in `directory`)
// instead of `name`; names in `hidden` are not part of that checkpoint. Empty for a clean folder.
struct CheckpointFolderView {
  std::map<std::string, std::string> redirected;
  std::set<std::string> hidden;
  std::vector<std::string> notes;  // what was decided, e.g. "read the previous checkpoint: ..."
};
CheckpointFolderView checkpoint_folder_view(const std::filesystem::path& directory);

}  // namespace quicksave
