// make_strided_view: the kernels' view of a tensor of any rank (see staging_kernels.hpp).
#include <iterator>
#include <string>

#include "kernels/staging_kernels.hpp"
#include "quicksave/error.hpp"

namespace quicksave::kernels {

StridedView make_strided_view(const void* data, std::size_t rank_in, const std::int64_t* shape,
                              const std::int64_t* strides, int element_bytes) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::invalid_argument, "strided view: " + what); };
  if (element_bytes != 1 && element_bytes != 2 && element_bytes != 4 && element_bytes != 8) {
    fail("element size must be 1, 2, 4 or 8 bytes, got " + std::to_string(element_bytes));
  }
  StridedView view;
  view.data = data;
  view.element_bytes = element_bytes;
  // C-contiguous strides, when none are given, from the innermost dimension outwards.
  std::int64_t contiguous = 1;
  std::int64_t implied[64] = {};
  const bool imply = strides == nullptr;
  if (imply && rank_in > std::size(implied)) fail("more than 64 dimensions");
  for (std::size_t d = rank_in; imply && d-- > 0;) {
    implied[d] = contiguous;
    if (shape[d] > 0 && __builtin_mul_overflow(contiguous, shape[d], &contiguous)) fail("element count overflows");
  }
  int rank = 0;
  for (std::size_t d = 0; d < rank_in; ++d) {
    const std::int64_t size = shape[d];
    const std::int64_t stride = imply ? implied[d] : strides[d];
    if (size < 0) fail("dimension " + std::to_string(d) + " is negative (" + std::to_string(size) + ")");
    if (stride < 0) fail("stride " + std::to_string(d) + " is negative (" + std::to_string(stride) + ")");
    if (size == 1) continue;  // its stride never matters
    std::int64_t span = 0;
    if (rank > 0 && !__builtin_mul_overflow(stride, size, &span) && view.strides[rank - 1] == span) {
      view.shape[rank - 1] *= size;  // the outer dimension steps exactly over this one: one dimension
      view.strides[rank - 1] = stride;
      continue;
    }
    if (rank == kMaxPackRank) {
      fail("more than " + std::to_string(kMaxPackRank) + " dimensions remain after merging (rank " +
           std::to_string(rank_in) + ")");
    }
    view.shape[rank] = size;
    view.strides[rank] = stride;
    ++rank;
  }
  view.rank = rank;  // 0: a single element (or every dimension has size 1)
  return view;
}

}  // namespace quicksave::kernels
