// `quicksave verify` over the library's verify_checkpoint (quicksave/verify.hpp), with a progress
// bar on a terminal; the demo uses it too.
#pragma once

#include <filesystem>

#include "quicksave/verify.hpp"

namespace quicksave::cli {

namespace fs = std::filesystem;

// verify_checkpoint, drawing a progress bar on stderr when `progress` (and stderr is a terminal).
VerifyReport verify_with_progress(const fs::path& path, bool progress);

}  // namespace quicksave::cli
