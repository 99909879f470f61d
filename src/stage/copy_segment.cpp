// stage::copy_segment: copies a byte range of a host tensor's C-order image into a buffer.
//
// Contiguous tensors are one memcpy. Strided views (transposes, permutations, slices with a step,
// stride-0 expansions) are gathered: the layout is first simplified (size-1 dimensions dropped,
// dimensions that are contiguous with each other merged), then the range's first element gets its
// multi-index once and the walk advances it like an odometer, copying the innermost dimension as
// one memcpy when it is dense and with fixed-size loads otherwise; transposed rows are moved in
// cache-sized tiles (see gather_rows). Ranges that start or end inside an element (chunks are cut
// at byte offsets, not element boundaries) gather that element to a small temporary and copy the
// wanted part of it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "plan/tensor_view_check.hpp"
#include "stage/copy_segment.hpp"
#include "quicksave/error.hpp"

namespace quicksave::stage {
namespace {

// The widest element of any dtype (C64, F64, I64, U64).
constexpr std::size_t kMaxElementBytes = 8;

[[noreturn]] void fail(const TensorRef& t, const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "copy_segment: tensor '" + t.name + "' " + what);
}

// A strided layout with byte strides, simplified so that the innermost loop is as long as it can be.
struct Layout {
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;  // bytes
};

Layout simplify(const TensorRef& t, std::size_t element_bytes) {
  Layout layout;
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    const auto size = static_cast<std::uint64_t>(t.shape[i]);
    if (size == 1) continue;  // its stride never matters
    const std::uint64_t stride = static_cast<std::uint64_t>(t.strides[i]) * element_bytes;
    // The previous (outer) dimension steps exactly over this one: both are one longer dimension.
    if (!layout.shape.empty() && layout.stride.back() == stride * size) {
      layout.shape.back() *= size;
      layout.stride.back() = stride;
      continue;
    }
    layout.shape.push_back(size);
    layout.stride.push_back(stride);
  }
  if (layout.shape.empty()) {  // a single element
    layout.shape.push_back(1);
    layout.stride.push_back(element_bytes);
  }
  return layout;
}

template <std::size_t E>
void gather_run(const std::byte* src, std::uint64_t stride, std::uint64_t count, std::byte* out) {
  // Fixed-size memcpy compiles to one load and one store and is free of alignment and aliasing
  // assumptions (tensor data need not be aligned to its element size).
  std::uint64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    std::memcpy(out + (i + 0) * E, src + (i + 0) * stride, E);
    std::memcpy(out + (i + 1) * E, src + (i + 1) * stride, E);
    std::memcpy(out + (i + 2) * E, src + (i + 2) * stride, E);
    std::memcpy(out + (i + 3) * E, src + (i + 3) * stride, E);
  }
  for (; i < count; ++i) std::memcpy(out + i * E, src + i * stride, E);
}

// `count` elements of `element_bytes` each, `stride` bytes apart, packed into `out`.
void copy_run(const std::byte* src, std::uint64_t stride, std::size_t element_bytes, std::uint64_t count,
              std::byte* out) {
  if (stride == element_bytes) {
    std::memcpy(out, src, count * element_bytes);
    return;
  }
  if (stride == 0) {  // an expanded dimension: one element repeated
    if (element_bytes == 1) {
      std::memset(out, static_cast<int>(*src), count);
      return;
    }
    std::memcpy(out, src, element_bytes);
    // Doubling copies keep this a handful of memcpy calls however long the run is.
    std::uint64_t done = 1;
    while (done < count) {
      const std::uint64_t n = std::min(done, count - done);
      std::memcpy(out + done * element_bytes, out, n * element_bytes);
      done += n;
    }
    return;
  }
  switch (element_bytes) {
    case 1: gather_run<1>(src, stride, count, out); return;
    case 2: gather_run<2>(src, stride, count, out); return;
    case 4: gather_run<4>(src, stride, count, out); return;
    case 8: gather_run<8>(src, stride, count, out); return;
    default:
      for (std::uint64_t i = 0; i < count; ++i) std::memcpy(out + i * element_bytes, src + i * stride, element_bytes);
  }
}

// Blocked gather for transposes. Walking a transposed matrix along its C-order rows reads one
// element per source cache line (and, for large matrices, per page), about 0.6 GB/s for float32.
// Instead a band of up to kBandRows rows is moved in square tiles of kTileBytes-wide rows: each
// tile is read column by column (a column is adjacent source elements, so whole cache lines are
// used), put in a small buffer, then written out row by row (whole destination lines). The buffer
// matters: with power-of-two row lengths the destination rows alias in the cache, and writing an
// element at a time would evict each line before it is complete. Walking the band tile column by
// tile column keeps the few source pages of a tile column hot in the TLB across the band. The
// sizes were measured on a 256 MiB float32 transpose (about 3.5 GB/s instead of 0.6).
constexpr std::uint64_t kTileBytes = 64;
constexpr std::uint64_t kBandRows = 256;

// Copies `rows` whole rows of `cols` elements, row r's element c at src + r*row_stride +
// c*col_stride, into `out` (row-major).
template <std::size_t E>
void gather_rows(const std::byte* src, std::uint64_t row_stride, std::uint64_t col_stride, std::uint64_t rows,
                 std::uint64_t cols, std::byte* out) {
  constexpr std::uint64_t kSide = kTileBytes / E;
  std::byte tile[kSide * kSide * E];
  const std::uint64_t out_row = cols * E;
  for (std::uint64_t c0 = 0; c0 < cols; c0 += kSide) {
    const std::uint64_t n = std::min(kSide, cols - c0);
    for (std::uint64_t r0 = 0; r0 < rows; r0 += kSide) {
      const std::uint64_t m = std::min(kSide, rows - r0);
      const std::byte* corner = src + r0 * row_stride + c0 * col_stride;
      for (std::uint64_t c = 0; c < n; ++c) {
        const std::byte* column = corner + c * col_stride;
        for (std::uint64_t r = 0; r < m; ++r) std::memcpy(tile + (r * kSide + c) * E, column + r * row_stride, E);
      }
      std::byte* o = out + r0 * out_row + c0 * E;
      for (std::uint64_t r = 0; r < m; ++r) std::memcpy(o + r * out_row, tile + r * kSide * E, n * E);
    }
  }
}

void gather_band(const std::byte* src, std::uint64_t row_stride, std::uint64_t col_stride,
                      std::size_t element_bytes, std::uint64_t rows, std::uint64_t cols, std::byte* out) {
  switch (element_bytes) {
    case 1: gather_rows<1>(src, row_stride, col_stride, rows, cols, out); return;
    case 2: gather_rows<2>(src, row_stride, col_stride, rows, cols, out); return;
    case 4: gather_rows<4>(src, row_stride, col_stride, rows, cols, out); return;
    case 8: gather_rows<8>(src, row_stride, col_stride, rows, cols, out); return;
    default:
      for (std::uint64_t r = 0; r < rows; ++r) {
        copy_run(src + r * row_stride, col_stride, element_bytes, cols, out + r * cols * element_bytes);
      }
  }
}

// Copies `count` whole elements, starting at C-order element `first`, into `out`.
void gather_elements(const std::byte* base, const Layout& layout, std::size_t element_bytes, std::uint64_t first,
                     std::uint64_t count, std::byte* out) {
  const std::size_t dims = layout.shape.size();
  const std::size_t inner_dim = dims - 1;
  // The multi-index of `first`, computed once; the loops below only ever advance it.
  std::vector<std::uint64_t> index(dims);
  std::uint64_t rest = first;
  for (std::size_t i = dims; i-- > 0;) {
    index[i] = rest % layout.shape[i];
    rest /= layout.shape[i];
  }
  std::uint64_t row = 0;  // byte offset of the current innermost row's first element
  for (std::size_t i = 0; i < inner_dim; ++i) row += index[i] * layout.stride[i];

  const std::uint64_t cols = layout.shape[inner_dim];
  const std::uint64_t col_stride = layout.stride[inner_dim];
  // Advances the outer multi-index by `n` rows; n never carries past the row dimension more than once.
  auto next_rows = [&](std::uint64_t n) {
    if (dims < 2) return;
    const std::size_t r = inner_dim - 1;
    row += n * layout.stride[r];
    index[r] += n;
    if (index[r] < layout.shape[r]) return;
    row -= layout.stride[r] * layout.shape[r];
    index[r] = 0;
    for (std::size_t j = r; j-- > 0;) {  // odometer carry over the further-out dimensions
      row += layout.stride[j];
      if (++index[j] < layout.shape[j]) break;
      row -= layout.stride[j] * layout.shape[j];
      index[j] = 0;
    }
  };

  // A range that starts inside a row finishes that row first.
  if (index[inner_dim] != 0) {
    const std::uint64_t n = std::min(count, cols - index[inner_dim]);
    copy_run(base + row + index[inner_dim] * col_stride, col_stride, element_bytes, n, out);
    out += n * element_bytes;
    count -= n;
    if (count == 0) return;
    next_rows(1);
  }
  // Whole rows. Rows nearer to each other than a row's elements (transposes, permutations that
  // move the dense dimension outwards) are gathered in bands, tile by tile.
  const bool banded = dims >= 2 && col_stride != element_bytes && col_stride != 0 &&
                      layout.stride[inner_dim - 1] < col_stride;
  while (count >= cols) {
    std::uint64_t rows = 1;
    if (banded) {  // a band stays within one run of the row dimension, so its rows are equidistant
      const std::size_t r = inner_dim - 1;
      rows = std::min({kBandRows, count / cols, layout.shape[r] - index[r]});
    }
    if (rows > 1) {
      gather_band(base + row, layout.stride[inner_dim - 1], col_stride, element_bytes, rows, cols, out);
    } else {
      copy_run(base + row, col_stride, element_bytes, cols, out);
    }
    out += rows * cols * element_bytes;
    count -= rows * cols;
    if (count == 0) return;
    next_rows(rows);
  }
  // And a range that ends inside a row.
  if (count != 0) copy_run(base + row, col_stride, element_bytes, count, out);
}

}  // namespace

void copy_segment(const TensorRef& t, std::uint64_t source_offset, std::uint64_t length, std::byte* dst) {
  if (length == 0) return;
  if (t.device.kind != DeviceKind::cpu) fail(t, "is on " + t.device.str() + "; copy_segment reads host memory only");
  // The view's geometry, checked once for every copier (plan/tensor_view_check.hpp).
  const plan::ViewExtent extent = plan::check_view(t, "copy_segment");
  const std::uint64_t nbytes = extent.nbytes;
  std::uint64_t end = 0;
  if (__builtin_add_overflow(source_offset, length, &end) || end > nbytes) {
    fail(t, "has " + std::to_string(nbytes) + " bytes; cannot copy bytes [" + std::to_string(source_offset) + ", " +
                std::to_string(source_offset) + "+" + std::to_string(length) + ")");
  }
  if (dst == nullptr) fail(t, "was given a null destination");
  const bool contiguous = extent.contiguous;
  const auto element_bytes = static_cast<std::size_t>(dtype_bits(t.dtype) / 8);

  const auto* base = static_cast<const std::byte*>(t.data);
  if (contiguous) {
    std::memcpy(dst, base + source_offset, length);
    return;
  }

  const Layout layout = simplify(t, element_bytes);
  std::uint64_t element = source_offset / element_bytes;
  const std::uint64_t head_skip = source_offset % element_bytes;
  if (head_skip != 0) {  // the range starts inside an element
    std::byte tmp[kMaxElementBytes];
    gather_elements(base, layout, element_bytes, element, 1, tmp);
    const std::uint64_t n = std::min<std::uint64_t>(element_bytes - head_skip, length);
    std::memcpy(dst, tmp + head_skip, n);
    dst += n;
    length -= n;
    ++element;
  }
  const std::uint64_t whole = length / element_bytes;
  if (whole != 0) {
    gather_elements(base, layout, element_bytes, element, whole, dst);
    dst += whole * element_bytes;
    length -= whole * element_bytes;
    element += whole;
  }
  if (length != 0) {  // the range ends inside an element
    std::byte tmp[kMaxElementBytes];
    gather_elements(base, layout, element_bytes, element, 1, tmp);
    std::memcpy(dst, tmp, length);
  }
}

}  // namespace quicksave::stage
