// CUDA runtime errors as quicksave::Error: "<call>: <cudaGetErrorName> (<description>; <context>)",
// e.g. "cudaMemcpyAsync: cudaErrorIllegalAddress (an illegal memory access was encountered;
// device=cuda:0, bytes=8388608)". Used by the kernels' launchers and the CUDA copier.
//
// Codes: a missing or unusable device, driver or kernel image, and device memory that cannot be
// allocated, are ErrorCode::unavailable (the facility is missing here); anything else is
// ErrorCode::internal (a quicksave bug or a corrupted CUDA context).
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <string_view>

#include "quicksave/error.hpp"

namespace quicksave::kernels {

ErrorCode cuda_error_code(cudaError_t rc) noexcept;

Error cuda_error(cudaError_t rc, std::string_view call, std::string_view context = {});

// Throws cuda_error(rc, call, context) unless rc is cudaSuccess.
inline void cuda_check(cudaError_t rc, std::string_view call, std::string_view context = {}) {
  if (rc != cudaSuccess) throw cuda_error(rc, call, context);
}

}  // namespace quicksave::kernels
