// Staging kernels: the device-side half of the CUDA copier (DESIGN.md §3, stage). Both write into
// a device staging buffer (the copier's per-stream scratch), from which one cudaMemcpyAsync moves
// the bytes to pinned host memory, so that the GPU's SMs are busy for microseconds at HBM speed
// and the PCIe/NVLink transfer is left to the copy engine.
//   pack_strided: a byte range of the C-order image of a non-contiguous tensor (any rank up to
//                 kMaxPackRank, non-negative strides, 1/2/4/8-byte elements), without a full-size
//                 temporary: the range may start and end inside an element, as chunks do;
//   gather:       many small contiguous pieces (biases, norms) packed in one launch per
//                 kGatherEntriesPerLaunch pieces instead of one cudaMemcpyAsync each.
// The launchers never abort: a bad argument throws quicksave::Error(invalid_argument), a failed
// launch the Error of cuda_error.hpp (the CUDA call and error name). They only enqueue work on
// `stream` (of the current device) and return.
//
// This header carries no CUDA types so that code without the CUDA include path can see it, and
// is C++17 (the kernels are compiled as C++17: CMake before 3.26 cannot ask nvcc for C++20).
#pragma once

#include <cstddef>
#include <cstdint>

struct CUstream_st;

namespace quicksave::kernels {

inline constexpr int kMaxPackRank = 8;

// A strided view of device memory: element (i0, ..., i{rank-1}) lives at
// data + sum(i_k * strides[k]) * element_bytes. Rank 0 is one element.
struct StridedView {
  const void* data = nullptr;
  int rank = 0;
  std::int64_t shape[kMaxPackRank] = {};
  std::int64_t strides[kMaxPackRank] = {};  // in elements, non-negative
  int element_bytes = 1;                    // 1, 2, 4 or 8
};

// The view of a tensor of any rank: size-1 dimensions are dropped and dimensions that step
// exactly over each other are merged (a transposed 4-D tensor usually becomes a 2-D view).
// Throws quicksave::Error(invalid_argument) for negative sizes or strides, a shape/strides length
// mismatch, an element size other than 1/2/4/8, or more than kMaxPackRank dimensions remaining.
// `strides` holds `rank` values, or is null for C-contiguous.
StridedView make_strided_view(const void* data, std::size_t rank, const std::int64_t* shape,
                              const std::int64_t* strides, int element_bytes);

// Writes bytes [offset, offset + length) of `view`'s C-order image to dst[0, length) (device memory).
void pack_strided(const StridedView& view, std::uint64_t offset, std::uint64_t length, void* dst, CUstream_st* stream);

// One piece for gather: `bytes` bytes from `src` (device memory) to dst + dst_offset.
struct GatherEntry {
  const void* src = nullptr;
  std::uint64_t dst_offset = 0;
  std::uint64_t bytes = 0;
};

// Pieces per launch: the table travels as the kernel's parameter (up to 32 KB on every GPU that
// CUDA 13 supports), so a launch needs no table upload and the caller's array may be reused as
// soon as gather returns.
inline constexpr std::size_t kGatherEntriesPerLaunch = 2040;

// Copies every entry to dst + dst_offset (device memory). Entries must not overlap in dst; each
// entry's bytes and dst_offset + bytes must stay below 4 GiB (they are staging pieces).
void gather(const GatherEntry* entries, std::size_t count, void* dst, CUstream_st* stream);

// Number of kernel launches gather() makes for `entries` non-empty entries.
constexpr std::size_t gather_launches(std::size_t entries) {
  return (entries + kGatherEntriesPerLaunch - 1) / kGatherEntriesPerLaunch;
}

}  // namespace quicksave::kernels
