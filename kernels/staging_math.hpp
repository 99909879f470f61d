// The arithmetic of the staging kernels, shared by the kernels (compiled by nvcc for the device)
// and by their host-side checks (compiled by the host compiler): what one thread of pack_strided
// does for one element, and what one thread of gather does for its share of one piece. Running
// these functions over every thread index on the host reproduces a launch exactly, which lets the
// CPU tests check the indexing on machines without a GPU (the threads of a launch write disjoint
// bytes, so the order in which they run does not matter).
//
// Also the host-only launch preparation: argument checks, layout simplification and batching,
// which throw quicksave::Error(invalid_argument) for unusable input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/staging_kernels.hpp"
#include "quicksave/error.hpp"

#if defined(__CUDACC__)
#define QUICKSAVE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QUICKSAVE_HOST_DEVICE inline
#endif

namespace quicksave::kernels::detail {

// ---- pack_strided ----------------------------------------------------------------------------

// One launch of pack_strided: elements first .. first+count-1 (C order) of the simplified view,
// of which the bytes [head, head + length) of their concatenation land at dst[0, length).
struct PackParams {
  const unsigned char* src = nullptr;
  unsigned char* dst = nullptr;
  std::uint64_t shape[kMaxPackRank] = {};
  std::uint64_t stride_bytes[kMaxPackRank] = {};
  std::uint64_t first = 0;
  std::uint64_t count = 0;
  std::uint64_t length = 0;
  std::uint32_t head = 0;
  std::int32_t rank = 1;
  // Whole-element loads and stores are safe (else byte by byte): every element of the source is
  // aligned to its size, and every destination position of a whole element is.
  std::int32_t src_aligned = 0;
  std::int32_t dst_aligned = 0;
};

struct PackPlan {
  PackParams params;
  int element_bytes = 1;
  bool index32 = false;  // element indices and sizes fit 32 bits: cheaper division on the device
  bool empty = true;     // nothing to do
};

template <int E>
struct Word;
template <>
struct Word<1> {
  using type = std::uint8_t;
};
template <>
struct Word<2> {
  using type = std::uint16_t;
};
template <>
struct Word<4> {
  using type = std::uint32_t;
};
template <>
struct Word<8> {
  using type = unsigned long long;
};

// A 16-byte word for gather's widest copies (a vector load/store on the device).
struct alignas(16) Word16 {
  unsigned long long lo, hi;
};

template <typename W>
QUICKSAVE_HOST_DEVICE W load_word(const unsigned char* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const W*>(p);
#else
  W w;
  std::memcpy(&w, p, sizeof(W));
  return w;
#endif
}

template <typename W>
QUICKSAVE_HOST_DEVICE void store_word(unsigned char* p, const W& w) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<W*>(p) = w;
#else
  std::memcpy(p, &w, sizeof(W));
#endif
}

// Byte offset from the view's first element of C-order element `e`. Dimensions are peeled from
// the innermost; the loop is unrolled over the fixed maximum rank so that the arrays stay in
// registers / the parameter bank.
template <typename Index>
QUICKSAVE_HOST_DEVICE std::uint64_t source_offset(const PackParams& p, Index e) {
  std::uint64_t offset = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int d = kMaxPackRank - 1; d >= 0; --d) {
    if (d < p.rank) {
      const Index size = static_cast<Index>(p.shape[d]);
      const Index i = e % size;
      e /= size;
      offset += static_cast<std::uint64_t>(i) * p.stride_bytes[d];
    }
  }
  return offset;
}

// What the thread for touched element k (0 <= k < count) does: read the element, write the part
// of it that falls inside [0, length) of dst. Only the first and the last element can be partial.
template <int E, typename Index>
QUICKSAVE_HOST_DEVICE void pack_element(const PackParams& p, std::uint64_t k) {
  using W = typename Word<E>::type;
  const unsigned char* s = p.src + source_offset<Index>(p, static_cast<Index>(p.first + k));
  W w = 0;
  if (p.src_aligned) {
    w = load_word<W>(s);
  } else {
    for (int b = 0; b < E; ++b) w = static_cast<W>(w | (static_cast<W>(s[b]) << (8 * b)));
  }
  // Where the element's first byte goes, relative to dst (negative for a range that starts inside
  // the first element). Memory is little-endian on every CUDA platform, so byte b of the loaded
  // word is byte b of the element.
  const std::int64_t pos = static_cast<std::int64_t>(k * E) - static_cast<std::int64_t>(p.head);
  if (pos >= 0 && static_cast<std::uint64_t>(pos) + E <= p.length) {
    unsigned char* d = p.dst + pos;
    if (p.dst_aligned) {
      store_word<W>(d, w);
    } else {
      for (int b = 0; b < E; ++b) d[b] = static_cast<unsigned char>(w >> (8 * b));
    }
    return;
  }
  for (int b = 0; b < E; ++b) {
    const std::int64_t q = pos + b;
    if (q >= 0 && static_cast<std::uint64_t>(q) < p.length) p.dst[q] = static_cast<unsigned char>(w >> (8 * b));
  }
}

// Checks `view` and the range, simplifies the layout (size-1 dimensions dropped, dimensions that
// step exactly over each other merged: fewer divisions per element) and fills a PackPlan.
inline PackPlan make_pack_plan(const StridedView& view, std::uint64_t offset, std::uint64_t length, void* dst) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::invalid_argument, "pack_strided: " + what); };
  const int e = view.element_bytes;
  if (e != 1 && e != 2 && e != 4 && e != 8) fail("element size must be 1, 2, 4 or 8 bytes, got " + std::to_string(e));
  if (view.rank < 0 || view.rank > kMaxPackRank) {
    fail("rank must be 0.." + std::to_string(kMaxPackRank) + ", got " + std::to_string(view.rank));
  }
  std::uint64_t numel = 1;
  for (int d = 0; d < view.rank; ++d) {
    if (view.shape[d] < 0) fail("dimension " + std::to_string(d) + " is negative (" + std::to_string(view.shape[d]) + ")");
    if (view.strides[d] < 0) fail("stride " + std::to_string(d) + " is negative (" + std::to_string(view.strides[d]) + ")");
    if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(view.shape[d]), &numel)) fail("element count overflows");
  }
  std::uint64_t nbytes = 0;
  std::uint64_t end = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(e), &nbytes) ||
      __builtin_add_overflow(offset, length, &end) || end > nbytes) {
    fail("bytes [" + std::to_string(offset) + ", " + std::to_string(offset) + "+" + std::to_string(length) +
         ") are outside the view's " + std::to_string(numel) + " elements of " + std::to_string(e) + " bytes");
  }
  PackPlan plan;
  plan.element_bytes = e;
  if (length == 0) return plan;
  if (view.data == nullptr) fail("null source");
  if (dst == nullptr) fail("null destination");

  PackParams& p = plan.params;
  int rank = 0;
  for (int d = 0; d < view.rank; ++d) {
    const auto size = static_cast<std::uint64_t>(view.shape[d]);
    if (size == 1) continue;  // its stride never matters
    std::uint64_t stride = 0;
    if (__builtin_mul_overflow(static_cast<std::uint64_t>(view.strides[d]), static_cast<std::uint64_t>(e), &stride)) {
      fail("stride " + std::to_string(d) + " overflows");
    }
    if (rank > 0 && p.stride_bytes[rank - 1] == stride * size) {  // the outer one steps over this one
      p.shape[rank - 1] *= size;
      p.stride_bytes[rank - 1] = stride;
      continue;
    }
    p.shape[rank] = size;
    p.stride_bytes[rank] = stride;
    ++rank;
  }
  if (rank == 0) {  // a single element
    p.shape[0] = 1;
    p.stride_bytes[0] = static_cast<std::uint64_t>(e);
    rank = 1;
  }
  p.rank = rank;
  p.src = static_cast<const unsigned char*>(view.data);
  p.dst = static_cast<unsigned char*>(dst);
  p.first = offset / static_cast<std::uint64_t>(e);
  p.head = static_cast<std::uint32_t>(offset % static_cast<std::uint64_t>(e));
  p.count = (end + static_cast<std::uint64_t>(e) - 1) / static_cast<std::uint64_t>(e) - p.first;
  p.length = length;
  // Byte strides are multiples of e, so an aligned first element means aligned elements.
  p.src_aligned = reinterpret_cast<std::uintptr_t>(p.src) % static_cast<std::uintptr_t>(e) == 0;
  // Element k starts at dst - head + k*e.
  p.dst_aligned = (reinterpret_cast<std::uintptr_t>(p.dst) - p.head) % static_cast<std::uintptr_t>(e) == 0;
  plan.index32 = p.first + p.count <= 0xffffffffull;
  for (int d = 0; d < rank; ++d) plan.index32 = plan.index32 && p.shape[d] <= 0xffffffffull;
  plan.empty = false;
  return plan;
}

// ---- gather ----------------------------------------------------------------------------------

struct GatherPiece {
  const unsigned char* src;
  std::uint32_t dst_offset;
  std::uint32_t bytes;
};

// The parameter of one gather launch (kernel parameters may take 32764 bytes on sm_70 and later).
struct GatherBatch {
  unsigned char* dst;
  std::uint32_t count;
  GatherPiece pieces[kGatherEntriesPerLaunch];
};
static_assert(sizeof(GatherBatch) <= 32764, "a gather batch must fit the kernel parameter limit");

// Thread t of T copies its share of n bytes in words of W (src and dst equally misaligned mod
// sizeof(W)): the bytes before dst's first W boundary, every T-th word, then the tail bytes.
template <typename W>
QUICKSAVE_HOST_DEVICE void copy_words(const unsigned char* src, unsigned char* dst, std::uint64_t n, unsigned t,
                                      unsigned threads) {
  constexpr std::uint64_t kW = sizeof(W);
  const std::uint64_t misalign = reinterpret_cast<std::uintptr_t>(dst) % kW;
  std::uint64_t head = misalign == 0 ? 0 : kW - misalign;
  if (head > n) head = n;
  for (std::uint64_t i = t; i < head; i += threads) dst[i] = src[i];
  const std::uint64_t words = (n - head) / kW;
  for (std::uint64_t i = t; i < words; i += threads) {
    store_word<W>(dst + head + i * kW, load_word<W>(src + head + i * kW));
  }
  for (std::uint64_t i = head + words * kW + t; i < n; i += threads) dst[i] = src[i];
}

// Thread t of T's share of copying one piece, with the widest word both ends allow.
QUICKSAVE_HOST_DEVICE void copy_piece(const unsigned char* src, unsigned char* dst, std::uint64_t n, unsigned t,
                                      unsigned threads) {
  const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(src) ^ reinterpret_cast<std::uintptr_t>(dst);
  if ((mis & 15) == 0) {
    copy_words<Word16>(src, dst, n, t, threads);
  } else if ((mis & 7) == 0) {
    copy_words<unsigned long long>(src, dst, n, t, threads);
  } else if ((mis & 3) == 0) {
    copy_words<std::uint32_t>(src, dst, n, t, threads);
  } else if ((mis & 1) == 0) {
    copy_words<std::uint16_t>(src, dst, n, t, threads);
  } else {
    copy_words<std::uint8_t>(src, dst, n, t, threads);
  }
}

// Fills `batch` with up to kGatherEntriesPerLaunch non-empty entries from entries[start..count);
// returns the index after the last entry consumed. Throws for unusable entries.
inline std::size_t fill_gather_batch(const GatherEntry* entries, std::size_t count, std::size_t start, void* dst,
                                     GatherBatch& batch) {
  batch.dst = static_cast<unsigned char*>(dst);
  batch.count = 0;
  std::size_t i = start;
  for (; i < count && batch.count < kGatherEntriesPerLaunch; ++i) {
    const GatherEntry& e = entries[i];
    if (e.bytes == 0) continue;
    if (e.src == nullptr || dst == nullptr) {
      throw Error(ErrorCode::invalid_argument, "gather: entry " + std::to_string(i) + " has a null pointer");
    }
    if (e.bytes > 0xffffffffull || e.dst_offset > 0xffffffffull - e.bytes) {
      throw Error(ErrorCode::invalid_argument, "gather: entry " + std::to_string(i) + " ([" +
                                                   std::to_string(e.dst_offset) + ", +" + std::to_string(e.bytes) +
                                                   ")) reaches past 4 GiB of staging");
    }
    batch.pieces[batch.count++] = GatherPiece{static_cast<const unsigned char*>(e.src),
                                              static_cast<std::uint32_t>(e.dst_offset),
                                              static_cast<std::uint32_t>(e.bytes)};
  }
  return i;
}

}  // namespace quicksave::kernels::detail
