// quicksave's core API (no LibTorch): everything but <quicksave/torch.hpp>.
#pragma once

#include "quicksave/dtype.hpp"
#include "quicksave/error.hpp"
#include "quicksave/index.hpp"
#include "quicksave/metadata.hpp"
#include "quicksave/safetensors.hpp"
#include "quicksave/split.hpp"
