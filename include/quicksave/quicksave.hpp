// quicksave's core API (no LibTorch): every public header but the framework adapters
// <quicksave/torch.hpp>, <quicksave/dist.hpp> (LibTorch) and <quicksave/dlpack.hpp> (DLPack).
#pragma once

#include "quicksave/checkpointer.hpp"
#include "quicksave/dtype.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/loader.hpp"
#include "quicksave/log.hpp"
#include "quicksave/metadata.hpp"
#include "quicksave/reader.hpp"
#include "quicksave/safetensors.hpp"
#include "quicksave/save.hpp"
#include "quicksave/save_options.hpp"
#include "quicksave/split.hpp"
#include "quicksave/storage_key.hpp"
#include "quicksave/tensor_ref.hpp"
#include "quicksave/verify.hpp"
