// CUDA runtime errors as quicksave::Error (see cuda_error.hpp).
#include "kernels/cuda_error.hpp"

namespace quicksave::kernels {

ErrorCode cuda_error_code(cudaError_t rc) noexcept {
  switch (rc) {
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorStubLibrary:
    case cudaErrorSystemNotReady:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorJitCompilerNotFound:
    case cudaErrorNotSupported:
    case cudaErrorMemoryAllocation:
      return ErrorCode::unavailable;
    default:
      return ErrorCode::internal;
  }
}

Error cuda_error(cudaError_t rc, std::string_view call, std::string_view context) {
  // Both lookups are pure tables in the runtime: they work without a driver or device.
  const char* name = ::cudaGetErrorName(rc);
  const char* text = ::cudaGetErrorString(rc);
  std::string message(call);
  message += ": ";
  if (name != nullptr) {
    message += name;
  } else {
    message += "cudaError " + std::to_string(static_cast<int>(rc));
  }
  message += " (";
  message += text != nullptr ? text : "no description";
  if (!context.empty()) {
    message += "; ";
    message += context;
  }
  message += ")";
  return Error(cuda_error_code(rc), message);
}

}  // namespace quicksave::kernels
